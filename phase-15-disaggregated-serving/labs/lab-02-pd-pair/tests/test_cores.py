"""Per-rank CPU binds and the runner's hosting check (ungraded: given support code; CPU only, no vLLM).

vLLM 0.32 on CPU binds each TP rank's OpenMP threads to one core list of ``VLLM_CPU_OMP_THREADS_BIND``,
``|``-separated, and asserts one list per rank (``vllm/utils/ompmultiprocessing.py``,
``_parse_omp_threads_bind_env``: "Given number of CPU id list ... doesn't match local world size").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pdpair.pair.procs import _parse_cores
from pdpair.pair.runner import HostingError, assign_cores, bind_cores, check_hostable
from pdpair.pair.spec import SpecError, load_pair_spec, parse_binds, parse_pair_spec, with_side

pytestmark = pytest.mark.ungraded
LAB = Path(__file__).resolve().parents[1]


def _spec(ptp=1, dtp=1, pc="0", dc="1"):
    spec = load_pair_spec(LAB / "pair.cpu.yaml")
    spec = with_side(spec, "prefill", tensor_parallel_size=ptp, cpu_cores=pc)
    return with_side(spec, "decode", tensor_parallel_size=dtp, cpu_cores=dc)


def test_parse_binds_reads_one_core_list_per_rank():
    assert parse_binds("0") == [{0}] and parse_binds("0|1") == [{0}, {1}]
    assert parse_binds("0-2,5|3") == [{0, 1, 2, 5}, {3}]
    for bad in ("", "0|", "a", "3-1", "0||1", "-1"):
        with pytest.raises(ValueError):
            parse_binds(bad)
    assert _parse_cores("1|0") == {0, 1} and _parse_cores(None) is None


def test_the_spec_wants_one_core_list_per_tp_rank(tmp_path):
    ok = parse_pair_spec(
        {"model": "m", "port": 1, "decode": {"tensor_parallel_size": 2, "cpu_cores": "0|1"}}, tmp_path
    )
    assert ok.decode.cpu_cores == "0|1"
    with pytest.raises(
        SpecError, match=r"decode\.cpu_cores '1' binds 1 rank\(s\) but tensor_parallel_size is 2.*'0\|1'"
    ):
        parse_pair_spec(
            {"model": "m", "port": 1, "decode": {"tensor_parallel_size": 2, "cpu_cores": "1"}}, tmp_path
        )
    with pytest.raises(SpecError, match="binds 2 rank"):
        parse_pair_spec({"model": "m", "port": 1, "cpu_cores": "0|1"}, tmp_path)
    with pytest.raises(SpecError, match=r"prefill\.cpu_cores.*'x'"):
        parse_pair_spec({"model": "m", "port": 1, "prefill": {"cpu_cores": "x"}}, tmp_path)


def test_assign_cores_gives_each_side_its_own_cores_and_each_rank_one():
    assert assign_cores(_spec(), [0, 1]) == {"prefill": "0", "decode": "1"}  # the spec's own binds fit
    assert assign_cores(_spec(1, 2), [0, 1]) == {"prefill": "0", "decode": "1|1"}  # "1" cannot bind 2 ranks
    assert assign_cores(_spec(2, 1), [0, 1]) == {"prefill": "0|0", "decode": "1"}
    kept = assign_cores(_spec(2, 2, "0|1", "1|0"), [0, 1])
    assert kept == {"prefill": "0|1", "decode": "1|0"}, "binds that fit are the spec's to choose"
    moved = assign_cores(_spec(), [4, 5])
    assert moved == {"prefill": "4", "decode": "5"}, "cores this machine lacks: new ones"
    assert assign_cores(_spec(2, 2), [0, 1, 2, 3]) == {"prefill": "0|1", "decode": "2|3"}
    assert assign_cores(_spec(1, 2), [7]) == {"prefill": "7", "decode": "7|7"}


def test_bind_cores_sets_the_binds_and_leaves_the_input_alone():
    spec = _spec(1, 2)
    bound = bind_cores(spec, [0, 1])
    assert (bound.prefill.cpu_cores, bound.decode.cpu_cores) == ("0", "1|1")
    assert spec.decode.cpu_cores == "1", "bind_cores must not modify its input"


def test_a_plan_the_machine_cannot_host_is_refused_before_anything_starts():
    check_hostable(_spec(2, 1), [0, 1], mem_gib=20)  # three ranks on two cores: slow, but hosted
    check_hostable(_spec(2, 2), [0, 1], mem_gib=20)
    with pytest.raises(
        HostingError, match=r"prefill TP 2 \+ decode TP 3 = 5 ranks on 2 core\(s\).*at most 2 ranks per core"
    ):
        check_hostable(_spec(2, 3), [0, 1], mem_gib=20)
    with pytest.raises(HostingError, match=r"needs about [\d.]+ GiB .* 2\.0 GiB is available"):
        check_hostable(_spec(), [0, 1], mem_gib=2.0)
    cuda = with_side(with_side(_spec(2, 3), "prefill", device="cuda"), "decode", device="cuda")
    check_hostable(cuda, [0], mem_gib=0.1)  # CUDA sides are not this runner's CPU plan

"""lab-02 task 2, graded: ``find_hazards`` judged by what the real pair did (``pytest -m lab02_task2``).

The compatibility matrix (``captures/compat-matrix/matrix.json``, recorded by ``make matrix`` on a real
vLLM 0.32 CPU pair; read ``MATRIX.md``) changed one setting of ``pair.cpu.yaml`` per row and recorded the
outcome. Your ``find_hazards`` runs over every row's spec: a row that ``works`` must yield no hazard (a
false alarm stops a good deployment), a row that broke must yield exactly the hazard(s) the matrix names
for it. The crafted pairs below pin the rules the matrix cannot run here (two hosts, TP, the spellings of
one host or one dtype), each with the vLLM 0.32 source that decides it.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest

from pdpair.evidence.matrix import MATRIX_JSON, ROWS_BY_NAME, load_matrix, row_spec
from pdpair.pair.spec import ModelShape, load_pair_spec, with_side

LAB = Path(__file__).resolve().parents[1]  # the lab folder
CPU_YAML = LAB / "pair.cpu.yaml"
TINY = ModelShape(num_hidden_layers=12, num_key_value_heads=4, head_dim=64)
MATRIX = load_matrix(MATRIX_JSON)
RECORDED = {r["name"]: r for r in MATRIX["rows"]}


def _names(hazards) -> list[str]:
    names = [h.name for h in hazards]
    assert len(names) == len(set(names)), f"each hazard name at most once, got {names}"
    return names


def _expected(name: str) -> list[str]:
    return sorted(ROWS_BY_NAME[name].hazards)


@pytest.mark.lab02_task2
@pytest.mark.parametrize("name", list(RECORDED))
def test_find_hazards_agrees_with_the_recorded_matrix(impl, name):
    rec = RECORDED[name]
    spec = row_spec(ROWS_BY_NAME[name])
    before = copy.deepcopy(spec)
    names = _names(impl.find_hazards(spec.prefill, spec.decode))
    assert spec == before, "find_hazards must not modify its inputs"
    outcome = rec.get("outcome") or f"not run here ({rec.get('cannot_run')})"
    evidence = "; ".join(rec.get("evidence", [])[:2])
    if rec.get("outcome") == "works":
        assert names == [], (
            f"matrix row {name!r} ({rec['change']}): the real pair WORKS, so a pre-launch check must stay "
            f"silent; find_hazards said {names}")  # fmt: skip
    else:
        assert sorted(names) == _expected(name), (
            f"matrix row {name!r} ({rec['change']}): the real pair gave {outcome} [{evidence}]; find_hazards "
            f"must name exactly {_expected(name)}, it said {sorted(names)}")  # fmt: skip


def good_pair():
    spec = load_pair_spec(CPU_YAML)
    return with_side(with_side(spec, "prefill", shape=TINY), "decode", shape=TINY)


def _apply(spec, changes):
    for side, fields in changes:
        spec = with_side(spec, side, **fields)
    return spec


# Rules no CPU machine can run, or spellings the matrix does not enumerate; each from vLLM 0.32 source.
GOOD_VARIANTS = {
    # vllm/config/model.py _STR_DTYPE_TO_TORCH_DTYPE: half and float16 are one torch dtype, and the
    # NIXL hash (kv_connector/v1/nixl/metadata.py) hashes the resolved str(model_config.dtype)
    "dtype_spelled_half_and_float16": [("prefill", {"dtype": "half"}), ("decode", {"dtype": "float16"})],
    "dtype_spelled_float_and_float32": [("prefill", {"dtype": "float"}), ("decode", {"dtype": "float32"})],
    # vllm/model_executor/model_loader/weight_utils.py: initialize_single_dummy_weight(..., seed=1234)
    "dummy_weights_other_seed": [("prefill", {"load_format": "dummy", "seed": 0}), ("decode", {"load_format": "dummy", "seed": 7})],
    "tp_divides": [("prefill", {"tensor_parallel_size": 1}), ("decode", {"tensor_parallel_size": 2})],
    "same_ports_other_hosts": [
        ("prefill", {"host": "10.0.0.1", "side_channel_host": "10.0.0.1", "side_channel_port": 5600, "port": 8100}),
        ("decode", {"host": "10.0.0.2", "side_channel_host": "10.0.0.2", "side_channel_port": 5600, "port": 8100}),
    ],
}  # fmt: skip

BAD_PAIRS = {
    # metadata.py hashes str(cache_config.cache_dtype), the RAW string: fp8 and fp8_e4m3 differ
    "kv_cache_dtype_mismatch": [("prefill", {"kv_cache_dtype": "fp8"}), ("decode", {"kv_cache_dtype": "fp8_e4m3"})],
    # one host written three ways: the second bind of one port fails whatever the spelling
    "side_channel_port_clash": [("prefill", {"host": "localhost", "side_channel_port": 5600}),
                                ("decode", {"host": "::1", "side_channel_port": 5600})],
    "http_port_clash": [("prefill", {"host": "127.0.0.1", "port": 8100}), ("decode", {"host": "localhost", "port": 8100})],
    # across hosts a loopback side channel on EITHER side is unreachable for the peer (here: decode's)
    "localhost_side_channel_across_hosts": [("prefill", {"host": "10.0.0.1", "side_channel_host": "10.0.0.1"}),
                                            ("decode", {"host": "10.0.0.2", "side_channel_host": "::1"})],
    "removed_connector": [("prefill", {"connector": "P2pNcclConnector", "kv_connector_module_path": None})],
    "deprecated_kv_config_keys": [("prefill", {"kv_transfer_extra": {"kv_ip": "10.0.0.1"}})],
    # the matrix: 32/64 passed the handshake and returned wrong tokens; 16/32 is the same ratio
    "block_size_mismatch": [("prefill", {"block_size": 16}), ("decode", {"block_size": 32})],
    # kv_connector/factory.py: each name is its own class with its own protocol; NIXL's handshake needs NIXL
    "connector_mismatch": [("decode", {"connector": "LMCacheConnectorV1", "kv_connector_module_path": None})],
    "head_size_mismatch": [("decode", {"shape": replace(TINY, head_dim=128)})],
    "tp_not_divisible": [("prefill", {"tensor_parallel_size": 2}), ("decode", {"tensor_parallel_size": 3})],
}  # fmt: skip


@pytest.mark.lab02_task2
@pytest.mark.parametrize("variant", list(GOOD_VARIANTS))
def test_a_good_pair_has_no_hazards(impl, variant):
    spec = _apply(good_pair(), GOOD_VARIANTS[variant])
    hazards = impl.find_hazards(spec.prefill, spec.decode)
    assert hazards == [], f"{variant}: a working pair must yield no hazards, got {[h.name for h in hazards]}"


@pytest.mark.lab02_task2
@pytest.mark.parametrize("hazard", list(BAD_PAIRS))
def test_each_hazard_is_named_on_a_crafted_pair(impl, hazard):
    spec = _apply(good_pair(), BAD_PAIRS[hazard])
    hazards = impl.find_hazards(spec.prefill, spec.decode)
    names = _names(hazards)
    assert names == [hazard], f"this pair has exactly one problem, {hazard!r}; find_hazards said {names}"
    (h,) = hazards
    assert h.explanation.strip() and "\n" not in h.explanation, (
        f"{hazard}: the explanation must be one non-empty line, got {h.explanation!r}")  # fmt: skip


@pytest.mark.lab02_task2
def test_several_hazards_at_once_and_inputs_untouched(impl):
    spec = good_pair()
    rows = (
        "block_size_64_32",
        "dtype_bf16_vs_fp32",
        "side_channel_port_clash",
        "policy_recompute_prefill_killed",
    )
    for name in rows:
        for side, fields in ROWS_BY_NAME[name].sides.items():
            value = {k: (getattr(spec.prefill, k) if v == "@prefill" else v) for k, v in fields.items()}
            spec = with_side(spec, side, **value)
    before = copy.deepcopy(spec)
    names = _names(impl.find_hazards(spec.prefill, spec.decode))
    want = sorted(h for name in rows for h in ROWS_BY_NAME[name].hazards)
    assert sorted(names) == want, f"four broken settings at once: want {want}, got {sorted(names)}"
    assert spec == before, "find_hazards must not modify its inputs"


@pytest.mark.lab02_task2
def test_unknown_shapes_are_not_compared(impl):
    spec = good_pair()
    spec = with_side(spec, "decode", shape=None)
    spec = with_side(spec, "prefill", shape=replace(TINY, num_hidden_layers=2))
    names = _names(impl.find_hazards(spec.prefill, spec.decode))
    assert names == [], f"with one shape unknown (no config.json), shapes cannot be compared; got {names}"

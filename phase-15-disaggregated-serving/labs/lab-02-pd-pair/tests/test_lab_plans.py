"""lab-02 task 1, the edges: environment precedence, device-specific variables, copies, non-loopback hosts.

The shipped specs (test_lab.py) exercise the defaults; these tests change one thing at a time, on one side,
and check that the plan follows it there and nowhere else.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pdpair.pair.spec import load_pair_spec, parse_vllm_argv, with_side

LAB = Path(__file__).resolve().parents[1]  # the lab folder
CPU_YAML = LAB / "pair.cpu.yaml"
GPU_YAML = LAB / "pair.2gpu-hosts.yaml"
PY = "/usr/bin/python3-for-test"
CPU_VARS = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND")


def _kv(plan) -> dict:
    _, flags = parse_vllm_argv(plan.argv)
    return json.loads(flags["--kv-transfer-config"])


@pytest.mark.lab02_task1
def test_a_sides_own_env_wins_and_stays_on_that_side(impl):
    spec = load_pair_spec(CPU_YAML)
    own = {"VLLM_NIXL_SIDE_CHANNEL_PORT": "7000", "VLLM_CPU_OMP_THREADS_BIND": "0-1", "OMP_NUM_THREADS": 2}
    spec = with_side(spec, "prefill", env=own)
    plans = impl.launch_plans(spec, python=PY)
    pe, de = plans["prefill"].env, plans["decode"].env
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in pe.items()), (
        f"every env value must be a string (os.environ takes nothing else; YAML gives ints), got {pe}")  # fmt: skip
    want = {"VLLM_NIXL_SIDE_CHANNEL_PORT": "7000", "VLLM_CPU_OMP_THREADS_BIND": "0-1", "OMP_NUM_THREADS": "2"}
    got = {k: pe.get(k) for k in want}
    assert got == want, (
        "a side's own env is applied last and wins over the variables derived from the spec "
        f"(side_channel_port, cpu_cores): want {want}, got {got}")  # fmt: skip
    assert pe["VLLM_NIXL_SIDE_CHANNEL_HOST"] == "127.0.0.1" and pe["VLLM_CPU_KVCACHE_SPACE"] == "1", pe
    assert de == {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": "5601",
                  "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "1"}, (
        f"prefill's env must not leak into decode's plan, got {de}")  # fmt: skip


@pytest.mark.lab02_task1
def test_cuda_sides_get_no_cpu_variables_and_cpu_sides_no_cuda_ones(impl):
    gpu = load_pair_spec(GPU_YAML)
    for side in ("prefill", "decode"):  # CPU settings present in a CUDA spec (e.g. a shared YAML block)
        gpu = with_side(gpu, side, cpu_cores="0-3", cpu_kvcache_space_gib=4)
    gpu = with_side(gpu, "decode", cuda_devices=None)
    plans = impl.launch_plans(gpu, python=PY)
    for name, plan in plans.items():
        leaked = sorted(k for k in plan.env if k in CPU_VARS)
        assert not leaked, f"{name} runs on CUDA: VLLM_CPU_* variables do not belong in its env, got {leaked}"
    assert plans["prefill"].env.get("CUDA_VISIBLE_DEVICES") == "0", plans["prefill"].env
    assert "CUDA_VISIBLE_DEVICES" not in plans["decode"].env, (
        f"cuda_devices unset: leave CUDA_VISIBLE_DEVICES alone (not 'None'), got {plans['decode'].env}")  # fmt: skip

    cpu = with_side(load_pair_spec(CPU_YAML), "decode", cuda_devices="1")
    env = impl.launch_plans(cpu, python=PY)["decode"].env
    assert "CUDA_VISIBLE_DEVICES" not in env, f"a CPU side gets no CUDA variables, got {env}"
    assert env.get("VLLM_CPU_OMP_THREADS_BIND") == "1", env


@pytest.mark.lab02_task1
def test_unset_cpu_settings_add_no_variables(impl):
    spec = load_pair_spec(CPU_YAML)
    spec = with_side(spec, "prefill", cpu_cores=None, cpu_kvcache_space_gib=None)
    env = impl.launch_plans(spec, python=PY)["prefill"].env
    assert env == {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": "5600"}, (
        f"cpu_cores / cpu_kvcache_space_gib unset (None): no VLLM_CPU_* variable at all, got {env}")  # fmt: skip


@pytest.mark.lab02_task1
def test_kv_transfer_config_is_a_fresh_copy_every_call(impl):
    spec = load_pair_spec(CPU_YAML)
    extra = {"backends": ["UCX"], "lease": {"seconds": 60}}
    side = with_side(
        spec, "prefill", kv_connector_extra_config=extra, kv_transfer_extra={"x": {"y": [1]}}
    ).prefill
    before = copy.deepcopy(side)
    first = impl.kv_transfer_config(side)
    first["kv_connector_extra_config"]["backends"].append("TCP")
    first["kv_connector_extra_config"]["lease"]["seconds"] = 1
    first["x"]["y"].append(2)
    assert side == before, (
        "changing the returned config changed the spec: nested dicts/lists must be copies, not references")  # fmt: skip
    second = impl.kv_transfer_config(side)
    assert second["kv_connector_extra_config"] == extra and second["x"] == {"y": [1]}, (
        f"two calls must not share nested state, second call gave {second}")  # fmt: skip


@pytest.mark.lab02_task1
def test_plans_for_remote_hosts_use_those_hosts(impl):
    spec = load_pair_spec(GPU_YAML)
    # decode's NIXL traffic on its own network (another address than its HTTP API): two hosts, two NICs
    spec = with_side(spec, "decode", port=9200, side_channel_port=5700, side_channel_host="192.168.7.2")
    plans = impl.launch_plans(spec, python=PY)
    assert (plans["prefill"].url, plans["decode"].url) == ("http://10.0.0.1:8100", "http://10.0.0.2:9200"), (
        "each plan's url is its own side's HTTP host and port (where the proxy reaches its API; the side "
        f"channel is NIXL's, not HTTP), got {plans['prefill'].url}, {plans['decode'].url}")  # fmt: skip
    _, flags = parse_vllm_argv(plans["decode"].argv)
    assert (flags["--host"], flags["--port"]) == ("10.0.0.2", "9200"), flags
    de = plans["decode"].env
    assert (de["VLLM_NIXL_SIDE_CHANNEL_HOST"], de["VLLM_NIXL_SIDE_CHANNEL_PORT"]) == (
        "192.168.7.2",
        "5700",
    ), de
    assert plans["prefill"].argv[0] == plans["decode"].argv[0] == PY, (
        f"both sides start with the python given, got {plans['prefill'].argv[0]!r} / {plans['decode'].argv[0]!r}")  # fmt: skip
    assert (
        _kv(plans["decode"])["kv_role"] == "kv_consumer" and _kv(plans["prefill"])["kv_role"] == "kv_producer"
    )


@pytest.mark.lab02_task1
def test_a_core_key_in_kv_transfer_extra_is_passed_as_written(impl):
    """kv_transfer_extra is the operator's raw word to vLLM: its keys come last and win, a key the spec
    also sets (kv_buffer_device, kv_role...) included (the docstring's precedence)."""
    spec = load_pair_spec(CPU_YAML)
    raw = {"kv_buffer_device": "cuda", "kv_load_failure_policy": "recompute", "kv_rank": 0}
    side = with_side(spec, "decode", kv_transfer_extra=raw).decode
    cfg = impl.kv_transfer_config(side)
    got = {k: cfg.get(k) for k in raw}
    assert got == raw, f"kv_transfer_extra's keys win over the spec's own fields: want {raw}, got {got}"
    assert cfg["kv_role"] == "kv_consumer" and cfg["kv_connector"] == "NixlConnector", cfg
    kv = _kv(impl.launch_plans(with_side(spec, "decode", kv_transfer_extra=raw), python=PY)["decode"])
    assert kv == cfg, f"the launch plan's --kv-transfer-config is kv_transfer_config(side): {kv} vs {cfg}"

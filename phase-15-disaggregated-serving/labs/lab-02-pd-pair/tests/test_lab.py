"""lab-02 graded tests: the spec. ``pytest -m lab02_taskN`` grades one task.

Proxy tests run real HTTP on 127.0.0.1 (free ports): fake vLLM upstreams (pdpair.testing.fakes), the given
server plumbing (pdpair.proxy) and YOUR PDProxyPolicy. An exception your policy raises inside the server
is re-raised here, in the test, with its own traceback.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pdpair.evidence.capture import CAPTURE_DIR, load_capture, timings
from pdpair.load.client import wait_for
from pdpair.pair.spec import load_pair_spec, parse_pair_spec, parse_vllm_argv
from pdpair.proxy import UpstreamError
from pdpair.testing.fakes import token_text
from pdpair.testing.harness import assert_complete, completion, expected_tokens, pd_stack, run

LAB = Path(__file__).resolve().parents[1]  # the lab folder
CPU_YAML = LAB / "pair.cpu.yaml"
GPU_YAML = LAB / "pair.2gpu-hosts.yaml"
PY = "/usr/bin/python3-for-test"
SERVER = "vllm.entrypoints.openai.api_server"
# Bounds for the included capture (task 5): each holds, with a margin, on both recordings of this workload
# the folder has held - the included quiet one (2026-12-06) and the one it replaced (2026-11-27, load not
# recorded, in git history), whose prefill ran ~2.2x slower - so they are the setups' shape, not one day's
# speed. Both days' figures beside each bound: captures/cpu-2core/ANNOTATION.md, "What task 5 grades".
CONDITIONAL_P99_RATIO_MAX = 0.6
CONDITIONAL_P999_RATIO_MAX = 0.75
CONDITIONAL_TOLL_PCT_MAX = 25.0
PD_ALL_P99_RATIO_MAX = 0.45
PD_ALL_TOLL_PCT_MIN = 50.0
PD_ALL_TOLL_VS_CONDITIONAL_MIN = 5.0


# ================================================================================ task 1: launch plans


def _plan_parts(plan):
    module, flags = parse_vllm_argv(plan.argv)
    kv = json.loads(flags.pop("--kv-transfer-config"))
    return module, flags, kv


@pytest.mark.lab02_task1
def test_cpu_pair_launch_plans_match_vllm_flags_exactly(impl):
    spec = load_pair_spec(CPU_YAML)
    plans = impl.launch_plans(spec, python=PY)
    assert set(plans) == {"prefill", "decode"}, f"launch_plans must return both sides, got {set(plans)}"
    model_dir = str((LAB / "models" / "tiny-llama").resolve())
    for name, role, port, sc_port, core in (("prefill", "kv_producer", "8100", "5600", "0"),
                                            ("decode", "kv_consumer", "8200", "5601", "1")):  # fmt: skip
        plan = plans[name]
        assert isinstance(plan.argv, list) and all(isinstance(a, str) for a in plan.argv), (
            f"{name}: argv must be a list of strings (never a shell string), got {plan.argv!r}"
        )
        assert plan.argv[0] == PY, f"{name}: argv[0] must be the python given, got {plan.argv[0]!r}"
        module, flags, kv = _plan_parts(plan)
        assert module == SERVER, f"{name}: start vLLM with `python -m {SERVER}`, got -m {module}"
        want = {
            "--model": model_dir, "--load-format": "dummy", "--skip-tokenizer-init": True, "--seed": "0",
            "--host": "127.0.0.1", "--port": port, "--dtype": "bfloat16", "--kv-cache-dtype": "auto",
            "--block-size": "32", "--max-model-len": "2048", "--tensor-parallel-size": "1",
        }  # fmt: skip
        assert flags == want, f"{name}: vLLM flags differ.\n want {want}\n got  {flags}"
        want_kv = {"kv_connector": "NixlConnector", "kv_role": role, "kv_buffer_device": "cpu",
                   "kv_load_failure_policy": "fail"}  # fmt: skip
        assert kv == want_kv, f"{name}: --kv-transfer-config differs.\n want {want_kv}\n got  {kv}"
        want_env = {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": sc_port,
                    "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": core}  # fmt: skip
        assert plan.env == want_env, f"{name}: env differs.\n want {want_env}\n got  {plan.env}"
        assert plan.name == name and plan.url == f"http://127.0.0.1:{port}", (plan.name, plan.url)


@pytest.mark.lab02_task1
def test_the_two_plans_differ_only_where_the_sides_must(impl):
    plans = impl.launch_plans(load_pair_spec(CPU_YAML), python=PY)
    _, pf, pkv = _plan_parts(plans["prefill"])
    _, df, dkv = _plan_parts(plans["decode"])
    diff_flags = {k for k in pf.keys() | df.keys() if pf.get(k) != df.get(k)}
    assert diff_flags == {"--port"}, (
        f"besides the kv role, only --port may differ; differing flags: {diff_flags}"
    )
    diff_kv = {k for k in pkv.keys() | dkv.keys() if pkv.get(k) != dkv.get(k)}
    assert diff_kv == {"kv_role"}, f"the kv-transfer-configs may differ only in kv_role; differ in {diff_kv}"
    pe, de = plans["prefill"].env, plans["decode"].env
    assert pe["VLLM_NIXL_SIDE_CHANNEL_PORT"] != de["VLLM_NIXL_SIDE_CHANNEL_PORT"], (
        "two instances on one host need distinct side-channel ports", pe, de)  # fmt: skip
    diff_env = {k for k in pe.keys() | de.keys() if pe.get(k) != de.get(k)}
    assert diff_env == {"VLLM_NIXL_SIDE_CHANNEL_PORT", "VLLM_CPU_OMP_THREADS_BIND"}, (
        "the two envs may differ only in VLLM_NIXL_SIDE_CHANNEL_PORT and VLLM_CPU_OMP_THREADS_BIND (one port "
        f"and one core per side); they differ in {sorted(diff_env)}:\n prefill {pe}\n decode  {de}")  # fmt: skip


OVERRIDES_YAML = """
model: models/tiny-llama
port: 9000
kv_connector_extra_config: {kv_lease_duration: 60}
prefill:
  side_channel_port: 5700
  kv_connector_module_path: my_faults.connector
  env: {UCX_TLS: tcp}
decode:
  port: 9001
  side_channel_port: 5701
  block_size: 32
  skip_tokenizer_init: false
  hf_overrides: {num_hidden_layers: 6}
  kv_transfer_extra: {kv_rank: 1}
  kv_load_failure_policy: recompute
  extra_args: ["--max-num-batched-tokens", "64", "--enforce-eager"]
"""


@pytest.mark.lab02_task1
def test_overrides_extras_and_optional_flags_reach_only_their_side(impl, tmp_path):
    import yaml

    spec = parse_pair_spec(yaml.safe_load(OVERRIDES_YAML), tmp_path)
    before = copy.deepcopy(spec)
    plans = impl.launch_plans(spec, python=PY)
    assert spec == before, "launch_plans must not modify the spec"
    _, pf, pkv = _plan_parts(plans["prefill"])
    _, df, dkv = _plan_parts(plans["decode"])
    assert pf["--block-size"] == "16" and df["--block-size"] == "32", (pf["--block-size"], df["--block-size"])
    assert "--skip-tokenizer-init" in pf and "--skip-tokenizer-init" not in df, (
        "--skip-tokenizer-init is a bare flag, present only when skip_tokenizer_init is true")  # fmt: skip
    assert "--hf-overrides" not in pf, "no --hf-overrides when the side has none"
    assert json.loads(df["--hf-overrides"]) == {"num_hidden_layers": 6}, df.get("--hf-overrides")
    assert plans["decode"].argv[-3:] == ["--max-num-batched-tokens", "64", "--enforce-eager"], (
        f"extra_args go verbatim at the end of argv, got {plans['decode'].argv[-3:]}")  # fmt: skip
    assert pkv == {"kv_connector": "NixlConnector", "kv_role": "kv_producer", "kv_buffer_device": "cpu",
                   "kv_load_failure_policy": "fail", "kv_connector_extra_config": {"kv_lease_duration": 60},
                   "kv_connector_module_path": "my_faults.connector"}, pkv  # fmt: skip
    assert dkv == {"kv_connector": "NixlConnector", "kv_role": "kv_consumer", "kv_buffer_device": "cpu",
                   "kv_load_failure_policy": "recompute", "kv_connector_extra_config": {"kv_lease_duration": 60},
                   "kv_rank": 1}, dkv  # fmt: skip
    assert plans["prefill"].env == {"VLLM_NIXL_SIDE_CHANNEL_HOST": "localhost", "VLLM_NIXL_SIDE_CHANNEL_PORT": "5700",
                                    "UCX_TLS": "tcp"}, plans["prefill"].env  # fmt: skip


@pytest.mark.lab02_task1
def test_gpu_hosts_plans_use_cuda_env_and_reachable_side_channels(impl):
    plans = impl.launch_plans(load_pair_spec(GPU_YAML), python=PY)
    for name, host in (("prefill", "10.0.0.1"), ("decode", "10.0.0.2")):
        _, flags, kv = _plan_parts(plans[name])
        assert (flags["--host"], flags["--load-format"]) == (host, "auto"), (
            f"{name}: each side serves on its own host ({host}) with real weights (--load-format auto), "
            f"got --host {flags['--host']} --load-format {flags['--load-format']}")  # fmt: skip
        assert "--skip-tokenizer-init" not in flags, "real weights: the tokenizer is needed"
        assert kv["kv_buffer_device"] == "cuda", kv
        assert plans[name].env == {"VLLM_NIXL_SIDE_CHANNEL_HOST": host, "VLLM_NIXL_SIDE_CHANNEL_PORT": "5600",
                                   "CUDA_VISIBLE_DEVICES": "0"}, (name, plans[name].env)  # fmt: skip


# task 2 (hazards) is graded in test_hazards.py, against the compatibility matrix


# ==================================================================================== task 3: transforms


CLIENT_BODY = {
    "model": "tiny", "prompt": [1, 2, 3, 4], "max_tokens": 50, "max_completion_tokens": 50, "stream": True,
    "stream_options": {"include_usage": True}, "min_tokens": 5, "temperature": 0.0,
    "stop": ["\n"], "logit_bias": {"7": -1.0},
}  # fmt: skip
PREFILL_PARAMS = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                  "remote_block_ids": None, "remote_host": None, "remote_port": None}  # fmt: skip
RETURNED_PARAMS = {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": "e-1",
                   "remote_block_ids": [3, 4], "remote_request_id": "cmpl-r1-0", "remote_host": "10.0.0.1",
                   "remote_port": 5600, "tp_size": 1, "remote_num_tokens": 4, "transfer_mode": "pull"}  # fmt: skip


@pytest.mark.lab02_task3
def test_prefill_request_field_by_field(impl):
    body = copy.deepcopy(CLIENT_BODY)
    new, headers = impl.prefill_request(body, "req-42")
    assert new["max_tokens"] == 1, (
        f"prefill computes the prompt and ONE token: max_tokens=1, got {new['max_tokens']}"
    )
    assert new["max_completion_tokens"] == 1, (
        f"max_completion_tokens=1 too, got {new['max_completion_tokens']}"
    )
    assert new["stream"] is False, (
        "only a non-streaming answer carries kv_transfer_params back: stream must be False"
    )
    assert "stream_options" not in new and "min_tokens" not in new, (
        f"stream_options and min_tokens must be dropped, got keys {sorted(new)}")  # fmt: skip
    assert new["kv_transfer_params"] == PREFILL_PARAMS, new["kv_transfer_params"]
    for key in ("model", "prompt", "temperature", "stop", "logit_bias"):
        assert new[key] == CLIENT_BODY[key], f"{key} must pass through unchanged, got {new[key]!r}"
    assert set(new) == set(CLIENT_BODY) - {"stream_options", "min_tokens"} | {"kv_transfer_params"}, sorted(
        new
    )
    assert headers.get("X-Request-Id") == "req-42", (
        f"the prefill hop carries the request id header, got {headers}"
    )


@pytest.mark.lab02_task3
def test_prefill_request_does_not_mutate_the_client_body(impl):
    body = copy.deepcopy(CLIENT_BODY)
    new, _ = impl.prefill_request(body, "r")
    assert body == CLIENT_BODY, "the client's body must not be modified (decode needs it intact)"
    new["prompt"].append(99)
    new["logit_bias"]["8"] = 1.0
    new["kv_transfer_params"]["remote_host"] = "x"
    assert body == CLIENT_BODY, "the prefill body must be a deep copy: changing it changed the client's body"
    again, _ = impl.prefill_request(body, "r2")
    assert again["kv_transfer_params"] == PREFILL_PARAMS, "each prefill body needs a fresh kv_transfer_params"


@pytest.mark.lab02_task3
def test_prefill_request_does_not_invent_max_completion_tokens(impl):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9, "stream": True}
    new, _ = impl.prefill_request(body, "r")
    assert "max_completion_tokens" not in new, "only override max_completion_tokens when the client sent it"
    assert new["max_tokens"] == 1 and new["stream"] is False, new


@pytest.mark.lab02_task3
def test_decode_request_is_the_original_body_plus_returned_params(impl):
    body = copy.deepcopy(CLIENT_BODY)
    answer = {
        "id": "cmpl-1",
        "choices": [{"text": "x"}],
        "kv_transfer_params": copy.deepcopy(RETURNED_PARAMS),
    }
    new = impl.decode_request(body, answer)
    assert new["kv_transfer_params"] == RETURNED_PARAMS, (
        f"decode must get exactly the params prefill returned, got {new.get('kv_transfer_params')}")  # fmt: skip
    assert {k: v for k, v in new.items() if k != "kv_transfer_params"} == CLIENT_BODY, (
        "decode gets the client's ORIGINAL body (stream, max_tokens, min_tokens... intact)")  # fmt: skip
    assert body == CLIENT_BODY, "the client's body must not be modified"
    new["prompt"].append(0)
    new["kv_transfer_params"]["remote_block_ids"].append(9)
    assert body == CLIENT_BODY and answer["kv_transfer_params"] == RETURNED_PARAMS, (
        "decode_request must deep-copy"
    )


@pytest.mark.lab02_task3
def test_decode_request_without_params_raises(impl):
    with pytest.raises(ValueError):
        impl.decode_request({"prompt": "x"}, {"choices": [], "kv_transfer_params": None})
    with pytest.raises(ValueError):
        impl.decode_request({"prompt": "x"}, {"choices": []})


# ================================================================================ task 4: the proxy


@pytest.mark.lab02_task4
def test_handoff_streams_through_with_the_vllm_protocol(impl):
    async def scenario():
        async with pd_stack(impl, decode_kw={"require_kv_params": True}) as s:
            body = completion("hello", n=6) | {"stream_options": {"include_usage": True}, "min_tokens": 2}
            sent = copy.deepcopy(body)
            res = await s.call(body)
            assert_complete(res, body, "a normal handoff")
            assert res.headers.get("X-PD-Mode") == "disaggregated", res.headers
            (p,) = s.prefills[0].requests
            (d,) = s.decodes[0].requests
            assert p.body["max_tokens"] == 1 and p.body["stream"] is False, f"prefill got {p.body}"
            assert p.body["kv_transfer_params"]["do_remote_decode"] is True, p.body
            assert d.body == {**sent, "kv_transfer_params": d.kv_transfer_params}, (
                f"decode must get the client's original body plus the params, got {d.body}")  # fmt: skip
            issued = s.prefills[0].issued
            assert d.kv_transfer_params in issued.values(), (
                f"decode must receive the kv_transfer_params prefill returned; issued {issued}, got {d.kv_transfer_params}")  # fmt: skip
            assert p.request_id and p.request_id == d.request_id, (
                f"both hops carry the same X-Request-Id: prefill {p.request_id!r}, decode {d.request_id!r}")  # fmt: skip
            assert res.headers.get("X-Request-Id") == p.request_id, res.headers
            handoffs, fallbacks = (
                await s.metric("pdproxy_handoffs_total"),
                await s.metric("pdproxy_fallbacks_total"),
            )
            assert (handoffs, fallbacks) == (1, 0), (
                f"one healthy request = one handoff and no fallback: pdproxy_handoffs_total {handoffs}, "
                f"pdproxy_fallbacks_total {fallbacks}")  # fmt: skip

    run(scenario())


@pytest.mark.lab02_task4
def test_non_streaming_chat_handoff(impl):
    async def scenario():
        async with pd_stack(impl, decode_kw={"require_kv_params": True}) as s:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                    "max_completion_tokens": 4, "stream": False}  # fmt: skip
            res = await s.call(body, path="/v1/chat/completions", headers={"X-Request-Id": "client-7"})
            assert res.status == 200, (res.status, res.body)
            want = "".join(token_text(body, i) for i in range(4))
            assert res.body["choices"][0]["message"]["content"] == want, res.body
            (p,), (d,) = s.prefills[0].requests, s.decodes[0].requests
            assert p.path == d.path == "/v1/chat/completions", (p.path, d.path)
            assert p.body["max_completion_tokens"] == 1 and d.body["max_completion_tokens"] == 4, (
                p.body,
                d.body,
            )
            assert p.request_id and p.request_id == d.request_id, (
                f"both hops carry the same X-Request-Id: prefill {p.request_id!r}, decode {d.request_id!r}")  # fmt: skip
            assert res.headers.get("X-Request-Id") == "client-7", (
                f"the client's own X-Request-Id comes back to it, got {res.headers.get('X-Request-Id')!r}")  # fmt: skip

    run(scenario())


@pytest.mark.lab02_task4
def test_round_robin_balances_both_pools(impl):
    async def scenario():
        async with pd_stack(impl, n_prefill=2, n_decode=2, decode_kw={"require_kv_params": True}) as s:
            for i in range(8):
                body = completion(f"rr{i}", n=2)
                assert_complete(await s.call(body), body, f"request {i}")
            counts = [len(f.requests) for f in s.prefills + s.decodes]
            assert counts == [4, 4, 4, 4], (
                f"round-robin: 8 requests -> 4 per upstream (prefill0, prefill1, decode0, decode1), got {counts}"
            )

    run(scenario())


@pytest.mark.lab02_task4
def test_drill_prefill_killed_mid_run_every_request_completes(impl):
    async def scenario():
        async with pd_stack(impl, decode_kw={"itl_s": 0.002}) as s:
            results = []
            for wave in range(6):
                if wave == 2:
                    await s.prefills[0].kill()
                bodies = [completion(f"w{wave}r{i}", n=5) for i in range(4)]
                res = await asyncio.gather(*(s.call(b) for b in bodies))
                results += list(zip(bodies, res, strict=True))
            for body, res in results:
                assert_complete(res, body, f"request {body['prompt']} (prefill killed after wave 1)")
            modes = [res.headers.get("X-PD-Mode") for _, res in results]
            assert modes == ["disaggregated"] * 8 + ["fallback"] * 16, (
                "waves 0-1 (8 requests, prefill alive) must be disaggregated and waves 2-5 (16, prefill dead) "
                f"fallback, in X-PD-Mode; got {modes}")  # fmt: skip
            assert all(res.headers.get("X-PD-Fallback-Reason") == "unreachable" for _, res in results[8:]), (
                [res.headers.get("X-PD-Fallback-Reason") for _, res in results[8:]])  # fmt: skip
            assert await s.metric("pdproxy_fallbacks_total") == 16
            assert await s.metric("pdproxy_upstream_errors_total", role="prefill") == 16

    run(scenario())


@pytest.mark.lab02_task4
def test_drill_prefill_dies_with_requests_in_flight_every_request_completes(impl):
    """Prefill is killed while it holds 6 requests (mid-prefill): each one must still complete, from
    decode alone, as soon as the connection drops - not after prefill's compute time, and never as an error."""
    delay_s = 5.0

    async def scenario():
        async with pd_stack(impl, prefill_kw={"delay_s": delay_s}) as s:
            bodies = [completion(f"inflight{i}", n=5) for i in range(6)]
            t0 = time.monotonic()
            calls = [asyncio.ensure_future(s.call(b)) for b in bodies]
            prefill = s.prefills[0]
            arrived = await wait_for(
                lambda: len(prefill.requests) == len(bodies) or s.proxy.policy_errors, 5.0
            )
            s.proxy.raise_policy_error()  # your policy's exception, if that is why nothing reached prefill
            assert arrived, (
                f"all 6 requests must be at prefill before it dies, {len(prefill.requests)} arrived"
            )
            await prefill.kill()  # cuts the 6 open connections, then stops listening
            results = await asyncio.gather(*calls)
            took = time.monotonic() - t0
            for body, res in zip(bodies, results, strict=True):
                assert_complete(res, body, f"request {body['prompt']} (prefill died while computing it)")
            got = [(r.headers.get("X-PD-Mode"), r.headers.get("X-PD-Fallback-Reason")) for r in results]
            assert got == [("fallback", "unreachable")] * 6, (
                "prefill dropped the connections of requests in flight: each must fall back (unreachable) and "
                f"say so in X-PD-Mode / X-PD-Fallback-Reason, got {got}")  # fmt: skip
            sent = [d.body for d in s.decodes[0].requests]
            assert sorted(sent, key=str) == sorted(bodies, key=str), (
                f"a fallback sends decode the client's ORIGINAL body (no kv_transfer_params), decode got {sent}")  # fmt: skip
            assert took < delay_s, (
                f"the fallback starts when the connection drops, not after prefill's {delay_s} s compute: took {took:.2f} s")  # fmt: skip
            fell_back = await s.metric("pdproxy_fallbacks_total", reason="unreachable")
            assert fell_back == 6, (
                f"6 requests fell back (unreachable): pdproxy_fallbacks_total must say 6, got {fell_back}"
            )

    run(scenario())


@pytest.mark.lab02_task4
def test_drill_prefill_500_falls_back_and_says_so(impl):
    async def scenario():
        async with pd_stack(impl, prefill_kw={"behaviour": "error500"}) as s:
            body = completion("p500", n=4)
            res = await s.call(body)
            assert_complete(res, body, "prefill answered 500")
            assert res.headers.get("X-PD-Mode") == "fallback", res.headers
            assert res.headers.get("X-PD-Fallback-Reason") == "http_error", res.headers
            (d,) = s.decodes[0].requests
            assert d.kv_transfer_params is None and d.body == body, (
                f"fallback sends the ORIGINAL body, got {d.body}"
            )
            assert await s.metric("pdproxy_fallbacks_total", reason="http_error") == 1

    run(scenario())


@pytest.mark.lab02_task4
def test_drill_slow_prefill_times_out_then_falls_back(impl):
    async def scenario():
        async with pd_stack(impl, prefill_kw={"behaviour": "hang"}, prefill_timeout_s=0.3) as s:
            body = completion("slow", n=3)
            t0 = time.monotonic()
            res = await s.call(body)
            took = time.monotonic() - t0
            assert_complete(res, body, "prefill hung")
            assert res.headers.get("X-PD-Fallback-Reason") == "timeout", res.headers
            assert took < 2.0, (
                f"a hung prefill costs the timeout (0.3 s), then decode answers; took {took:.2f}s"
            )
            assert await s.metric("pdproxy_fallbacks_total", reason="timeout") == 1

    run(scenario())


@pytest.mark.lab02_task4
def test_prefill_without_kv_params_falls_back(impl):
    async def scenario():
        async with pd_stack(impl, prefill_kw={"issue_params": False}) as s:
            body = completion("noparams", n=3)
            res = await s.call(body)
            assert_complete(res, body, "prefill answered without kv_transfer_params")
            assert res.headers.get("X-PD-Fallback-Reason") == "no_kv_transfer_params", res.headers
            assert s.decodes[0].requests[0].kv_transfer_params is None

    run(scenario())


# (kind, status, fall back?): prefill's own failures degrade to decode-only; the client's 4xx do not
FALLBACK_CASES = [
    ("unreachable", None, True), ("timeout", None, True), ("bad_response", None, True),
    ("http_error", 500, True), ("http_error", 503, True), ("http_error", 408, True), ("http_error", 429, True),
    # every 5xx, not a list of the usual ones
    ("http_error", 501, True), ("http_error", 505, True), ("http_error", 507, True), ("http_error", 599, True),
    ("http_error", 400, False), ("http_error", 404, False), ("http_error", 409, False), ("http_error", 499, False),
]  # fmt: skip


@pytest.mark.lab02_task4
@pytest.mark.parametrize(("kind", "status", "want"), FALLBACK_CASES,
                         ids=[f"{k}-{s}" if s else k for k, s, _ in FALLBACK_CASES])  # fmt: skip
def test_should_fall_back_on_prefill_failures_not_on_client_errors(impl, kind, status, want):
    policy = impl.PDProxyPolicy(["http://127.0.0.1:8100"], ["http://127.0.0.1:8200"])
    body = {"error": {"message": f"HTTP {status}", "code": status}} if status else None
    error = UpstreamError("prefill", "http://127.0.0.1:8100", kind, status=status, body=body)
    got = policy.should_fall_back(error)
    what = f"HTTP {status}" if status else kind
    why = ("prefill's own failure (unreachable, timeout, bad answer, 5xx, 408, 429): decode can prefill locally"
           if want else "a 4xx other than 408/429 is the client's error: decode would refuse it too")  # fmt: skip
    assert bool(got) is want, (
        f"prefill failed with {what}: should_fall_back must be {want} ({why}), got {got!r}"
    )


@pytest.mark.lab02_task4
def test_client_errors_from_prefill_are_not_masked_by_fallback(impl):
    async def scenario():
        async with pd_stack(impl, prefill_kw={"behaviour": "error400"}) as s:
            res = await s.call(completion("too-long"))
            assert res.status == 400, (
                f"a 4xx from prefill is the client's error: pass it on, got {res.status}"
            )
            assert "injected 400" in json.dumps(res.body), f"pass prefill's error body on, got {res.body}"
            assert s.decodes[0].requests == [], "decode must not be called for a request prefill rejected"

    run(scenario())


@pytest.mark.lab02_task4
@pytest.mark.parametrize("how", ["down", "error500"])
def test_drill_decode_down_gives_503_naming_the_upstream(impl, how):
    async def scenario():
        async with pd_stack(impl, decode_kw={"behaviour": "error500" if how == "error500" else "ok"}) as s:
            if how == "down":
                await s.decodes[0].stop()
            t0 = time.monotonic()
            res = await s.call(completion("nodecode"))
            assert res.status == 503, f"decode {how}: the client must get 503, got {res.status} {res.body}"
            err = (res.body or {}).get("error") if isinstance(res.body, dict) else None
            assert err and err.get("upstream") == s.decodes[0].url, (
                f"the JSON error must name the decode upstream {s.decodes[0].url}, got {res.body}")  # fmt: skip
            assert err.get("type") == "decode_unavailable", (
                f"the 503's error object is typed decode_unavailable (the docstring's body), got {err}")  # fmt: skip
            kind = "unreachable" if how == "down" else "http_error"
            assert err.get("kind") == kind, (
                f"the 503's error object says how decode failed, its UpstreamError's kind {kind!r}: got {err}")  # fmt: skip
            assert time.monotonic() - t0 < 3.0, "a dead decode must fail fast, not hang"

    run(scenario())


@pytest.mark.lab02_task4
def test_decode_alone_when_there_is_no_prefill_pool(impl):
    async def scenario():
        async with pd_stack(impl, n_prefill=0) as s:
            body = completion("solo", n=3)
            res = await s.call(body)
            assert_complete(res, body, "no prefill upstreams")
            assert res.headers.get("X-PD-Fallback-Reason") == "no_prefill", res.headers

    run(scenario())


def ids(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


PREFILL_REMOTELY_CASES = [  # (threshold, prompt, remote?)
    (4, ids(3), False),
    (4, ids(4), False),  # the threshold is inclusive: "at most N tokens" stay local
    (4, ids(5), True),
    (0, ids(1), True),  # 0 switches the rule off: every prompt is handed off
    (4, "hi", True),  # text: the proxy cannot count its tokens
    (4, [ids(2), ids(2)], True),  # a batch of prompts is not a token-id list
    (4, [True, 5], True),  # bools are not token ids
    (2000, ids(1500), False),
    (1000, ids(1001), True),  # Dynamo's default max_local_prefill_length is 1000
]


@pytest.mark.lab02_task4
@pytest.mark.parametrize(("threshold", "prompt", "remote"), PREFILL_REMOTELY_CASES,
                         ids=[f"max{t}-{type(p).__name__}{len(p)}-{'remote' if r else 'local'}"
                              for t, p, r in PREFILL_REMOTELY_CASES])  # fmt: skip
def test_prefill_remotely_is_the_conditional_rule(impl, threshold, prompt, remote):
    policy = impl.PDProxyPolicy(["http://p"], ["http://d"], local_prefill_max_tokens=threshold)
    got = policy.prefill_remotely({"model": "m", "prompt": prompt, "max_tokens": 4})
    assert got is remote, (
        f"a prompt of {len(prompt)} {'token ids' if isinstance(prompt, list) else 'characters'} with "
        f"local_prefill_max_tokens={threshold} must go {'through prefill' if remote else 'straight to decode'}; "
        f"prefill_remotely returned {got!r}")  # fmt: skip
    assert impl.PDProxyPolicy(["http://p"], ["http://d"]).prefill_remotely({"prompt": ids(1)}) is True, (
        "the default threshold is 0: without it every request is handed off (part 1's behaviour)")  # fmt: skip
    # argument validation has its own test (test_lab_policy.py::test_policy_rejects_bad_arguments)


@pytest.mark.lab02_task4
def test_conditional_rule_short_prompts_skip_prefill_long_ones_are_handed_off(impl):
    async def scenario():
        async with pd_stack(impl, n_prefill=2, policy_kw={"local_prefill_max_tokens": 4}) as s:
            plan = [("long-a", ids(9, 10), "disaggregated"), ("short", ids(4, 20), "local"),
                    ("long-b", ids(5, 30), "disaggregated"), ("text", "a text prompt", "disaggregated"),
                    ("tiny", ids(1, 40), "local")]  # fmt: skip
            for tag, prompt, mode in plan:
                body = {"model": "tiny", "prompt": prompt, "max_tokens": 3, "stream": True}
                sent = copy.deepcopy(body)
                res = await s.call(body)
                assert_complete(res, body, f"{tag} ({len(prompt)} long)")
                assert res.headers.get("X-PD-Mode") == mode, (
                    f"{tag}: X-PD-Mode must be {mode!r}, got {res.headers.get('X-PD-Mode')!r}")  # fmt: skip
                if mode == "local":
                    assert s.decodes[0].requests[-1].body == sent, (
                        f"{tag}: a local prefill sends decode the client's body untouched, got "
                        f"{s.decodes[0].requests[-1].body}")  # fmt: skip
            per_prefill = [[r.body["prompt"] for r in p.requests] for p in s.prefills]
            want = [[plan[0][1], plan[3][1]], [plan[2][1]]]
            assert per_prefill == want, (
                "only the long and text prompts reach prefill, round-robin over both (long-a and text on the "
                "first, long-b on the second): a local request must not use up a prefill turn; got "
                f"{[[str(x)[:20] for x in got] for got in per_prefill]}")  # fmt: skip
            got = [await s.metric(m) for m in
                   ("pdproxy_handoffs_total", "pdproxy_local_prefills_total", "pdproxy_fallbacks_total")]  # fmt: skip
            assert got == [3, 2, 0], (
                f"handoffs / local prefills / fallbacks must be 3 / 2 / 0 (a short prompt is a choice, not a "
                f"failure), got {got}")  # fmt: skip

    run(scenario())


@pytest.mark.lab02_task4
def test_drill_client_disconnect_cancels_the_upstream_request(impl):
    async def scenario():
        async with pd_stack(impl, decode_kw={"itl_s": 0.05}) as s:
            body = completion("bye", n=200)
            res = await s.call(body, stop_after=3, headers={"X-Request-Id": "leaver"})
            assert res.texts == expected_tokens(body)[: len(res.texts)] and len(res.texts) >= 3, res.texts
            dec = s.decodes[0]
            ok = await wait_for(lambda: dec.requests and dec.requests[0].request_id in dec.cancelled, 3.0)
            assert ok, (
                "the client went away: decode must see its request cancelled within 3 s (not stream 200 tokens into the void)"
            )
            assert dec.requests[0].outcome == "cancelled", dec.requests[0].outcome
            assert await wait_for(lambda: s.proxy.metrics.value("pdproxy_client_disconnects_total") >= 1, 2.0)

    run(scenario())


@pytest.mark.lab02_task4
def test_load_64_concurrent_streams_every_token_once_in_order(impl):
    async def scenario():
        async with pd_stack(
            impl, n_prefill=2, n_decode=2, decode_kw={"itl_s": 0.002, "require_kv_params": True}
        ) as s:
            bodies = [completion(f"load{i}", n=24) for i in range(64)]
            results = await asyncio.gather(*(s.call(b, timeout_s=15) for b in bodies))
            for body, res in zip(bodies, results, strict=True):
                assert_complete(res, body, f"stream {body['prompt']} of 64")
            assert await s.metric("pdproxy_handoffs_total") == 64
            ids = [d.request_id for dec in s.decodes for d in dec.requests]
            assert len(ids) == len(set(ids)) == 64, "each request needs its own request id"

    run(scenario(), timeout_s=30)


# ================================================================================= task 5: the metrics


@pytest.mark.lab02_task5
def test_request_timing_known_answers_with_ties_and_single_tokens(impl):
    t = impl.request_timing(10.0, [10.5, 10.5, 10.75, 11.0])
    assert t.ttft_s == pytest.approx(0.5), f"TTFT = first arrival - send time, got {t.ttft_s}"
    assert t.itl_s == pytest.approx([0.0, 0.25, 0.25]), (
        f"ITL = gaps between consecutive tokens (a tie is a 0 gap; the first token is not an ITL), got {t.itl_s}")  # fmt: skip
    one = impl.request_timing(1.0, [1.25])
    assert one.ttft_s == pytest.approx(0.25) and list(one.itl_s) == [], f"one token: no ITL, got {one}"


@pytest.mark.lab02_task5
def test_request_timing_rejects_bad_captures_clearly(impl):
    with pytest.raises(ValueError):  # any wording: the docstring promises a reason, not its words
        impl.request_timing(0.0, [])
    with pytest.raises(ValueError):
        impl.request_timing(0.0, [1.0, 0.5])
    with pytest.raises(ValueError):
        impl.request_timing(5.0, [4.0])


@pytest.mark.lab02_task5
def test_percentile_is_nearest_rank(impl):
    hundred = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    cases = [(hundred, 50, 50), (hundred, 99, 99), (hundred, 100, 100), (hundred, 0, 1), (hundred, 57, 57),
             (hundred, 99.9, 100), ([float(v) for v in range(1, 11)], 90, 9), ([float(v) for v in range(1, 11)], 99, 10),
             ([float(v) for v in range(1, 11)], 91, 10), ([7.0], 99, 7), ([3.0, 1.0, 2.0, 2.0], 50, 2),
             ([float(v) for v in range(1, 1001)], 99.9, 999)]  # fmt: skip
    for values, p, want in cases:
        got = impl.percentile(values, p)
        assert got == want, (
            f"nearest-rank p{p} of {len(values)} values: rank ceil(p/100*n) -> {want}, got {got}"
        )


@pytest.mark.lab02_task5
def test_percentile_rejects_bad_input(impl):
    with pytest.raises(ValueError):
        impl.percentile([], 50)
    with pytest.raises(ValueError):
        impl.percentile([1.0], 101)


@pytest.mark.lab02_task5
@given(st.lists(st.integers(0, 50), min_size=1, max_size=60), st.integers(1, 100))
def test_percentile_property_nearest_rank_definition(impl, values, p):
    got = impl.percentile(values, p)
    n = len(values)
    at_most = sum(v <= got for v in values)
    below = sum(v < got for v in values)
    assert got in values, f"a nearest-rank percentile is one of the values, got {got}"
    assert at_most * 100 >= p * n and below * 100 < p * n, (
        f"p{p}: at least {p}% of values must be <= it and fewer than {p}% below it; values={sorted(values)}, got {got}")  # fmt: skip


def _runs(impl, gap_lists, ttfts):
    return [impl.RequestTiming(ttft_s=t, itl_s=list(g)) for g, t in zip(gap_lists, ttfts, strict=True)]


@pytest.mark.lab02_task5
def test_signature_the_mean_hides_the_tail(impl):
    # colocated: 97 gaps of 30 ms and 3 prefill stalls of 300 ms; disaggregated: steady 38 ms
    before = _runs(impl, [[0.030] * 97 + [0.300] * 3], [0.100])
    after = _runs(impl, [[0.038] * 100], [0.110])
    sig = impl.signature(before, after)
    assert sig.itl_mean_before_s == pytest.approx(0.0381) and sig.itl_mean_after_s == pytest.approx(0.038), (
        sig
    )
    assert sig.itl_p99_before_s == pytest.approx(0.300) and sig.itl_p99_after_s == pytest.approx(0.038), (
        f"p99 over 100 pooled gaps is the 99th smallest: 0.300 before, 0.038 after; got {sig}")  # fmt: skip
    assert sig.itl_p99_ratio == pytest.approx(0.038 / 0.300), sig.itl_p99_ratio
    assert sig.itl_p50_before_s == pytest.approx(0.030) and sig.itl_p50_ratio == pytest.approx(
        0.038 / 0.030
    ), sig
    assert sig.ttft_change_pct == pytest.approx(10.0), (
        f"TTFT p50 0.100 -> 0.110 is +10%, got {sig.ttft_change_pct}"
    )
    assert abs(sig.itl_mean_after_s / sig.itl_mean_before_s - 1) < 0.01 and sig.itl_p99_ratio < 0.2, (
        "the point of the lab: the mean barely moves while p99 collapses")  # fmt: skip


@pytest.mark.lab02_task5
def test_signature_pools_gaps_and_uses_p50_ttft(impl):
    before = _runs(impl, [[0.01], [0.01, 0.01, 0.01, 0.01, 0.01], [0.5]], [0.2, 0.1, 0.3])
    after = _runs(impl, [[0.02, 0.02], [0.02]], [0.05, 0.15])
    sig = impl.signature(before, after)
    # pooled: 7 gaps, p99 -> rank 7 = 0.5; a mean of per-request p99s would be different
    assert sig.itl_p99_before_s == pytest.approx(0.5) and sig.itl_p50_before_s == pytest.approx(0.01), sig
    assert sig.ttft_p50_before_s == pytest.approx(0.2) and sig.ttft_p50_after_s == pytest.approx(0.05), sig
    assert sig.ttft_change_pct == pytest.approx(-75.0), sig.ttft_change_pct
    assert math.isfinite(sig.itl_p50_ratio) and sig.itl_p50_ratio == pytest.approx(2.0), sig


@pytest.mark.lab02_task5
def test_signature_rejects_captures_without_gaps(impl):
    single = _runs(impl, [[]], [0.1])
    with pytest.raises(ValueError):
        impl.signature(single, _runs(impl, [[0.01]], [0.1]))
    with pytest.raises(ValueError):
        impl.signature(_runs(impl, [[0.01]], [0.1]), [])


# ---------------------------------------------- task 5 on a real capture (captures/cpu-2core, see its ANNOTATION.md)
# Bounds (the constants at the top) hold with a margin on both recordings this folder has held (both days'
# figures in the annotation); the hand-made cases above stay the precise tests. These check that YOUR
# metrics read the real signature out of real data.


@pytest.fixture(scope="module")
def recorded():
    return load_capture(CAPTURE_DIR)


def _sig(impl, recorded, before: str, after: str, run: int):
    _, runs = recorded
    return impl.signature(timings(impl, runs[(before, run)]), timings(impl, runs[(after, run)]))


def _gaps(impl, recorded, setup: str, run: int) -> list[float]:
    return [g for t in timings(impl, recorded[1][(setup, run)]) for g in t.itl_s]


@pytest.mark.lab02_task5
@pytest.mark.parametrize("setup", ["colocated", "colocated-chunk64", "pd-all", "pd-conditional"])
def test_capture_your_percentiles_reproduce_the_recorded_figures(impl, recorded, setup):
    manifest, runs = recorded
    for run_no in manifest["runs"]:
        want = manifest["results"][setup][str(run_no)]
        gaps = _gaps(impl, recorded, setup, run_no)
        ttfts = [t.ttft_s for t in timings(impl, runs[(setup, run_no)])]
        got = {"itl_p50_ms": impl.percentile(gaps, 50), "itl_p99_ms": impl.percentile(gaps, 99),
               "itl_p999_ms": impl.percentile(gaps, 99.9), "ttft_p50_ms": impl.percentile(ttfts, 50)}  # fmt: skip
        got = {k: round(v * 1e3, 1) for k, v in got.items()}
        assert got == {k: want[k] for k in got}, (
            f"{setup} run {run_no}: nearest-rank percentiles of the capture's {len(gaps)} gaps must equal the "
            f"recorder's (exact nearest rank); want {({k: want[k] for k in got})}, got {got}")  # fmt: skip


@pytest.mark.lab02_task5
@pytest.mark.parametrize("run", [1, 2])
def test_capture_conditional_pd_cuts_the_tail_for_a_modest_toll(impl, recorded, run):
    sig = _sig(impl, recorded, "colocated-chunk64", "pd-conditional", run)
    assert sig.itl_p99_ratio <= CONDITIONAL_P99_RATIO_MAX, (
        f"run {run}: conditional P/D vs the chunked baseline must cut ITL p99 to <= {CONDITIONAL_P99_RATIO_MAX} of "
        f"it; got {sig.itl_p99_before_s * 1e3:.1f} -> {sig.itl_p99_after_s * 1e3:.1f} ms (x{sig.itl_p99_ratio:.2f})")  # fmt: skip
    assert 0.85 <= sig.itl_p50_ratio <= 1.15, (
        f"run {run}: ITL p50 must stay within +-15% (interference is a tail phenomenon); got "
        f"{sig.itl_p50_before_s * 1e3:.1f} -> {sig.itl_p50_after_s * 1e3:.1f} ms (x{sig.itl_p50_ratio:.2f})")  # fmt: skip
    assert 0 < sig.ttft_change_pct <= CONDITIONAL_TOLL_PCT_MAX, (
        f"run {run}: the TTFT toll must be positive and modest (0, {CONDITIONAL_TOLL_PCT_MAX}]%; got "
        f"{sig.ttft_p50_before_s * 1e3:.1f} -> {sig.ttft_p50_after_s * 1e3:.1f} ms ({sig.ttft_change_pct:+.1f}%)")  # fmt: skip
    before, after = (
        impl.percentile(_gaps(impl, recorded, s, run), 99.9) for s in ("colocated-chunk64", "pd-conditional")
    )
    assert after <= CONDITIONAL_P999_RATIO_MAX * before, (
        f"run {run}: the deep tail falls too (p99.9 <= x{CONDITIONAL_P999_RATIO_MAX}); got {before * 1e3:.1f} -> "
        f"{after * 1e3:.1f} ms")  # fmt: skip


@pytest.mark.lab02_task5
@pytest.mark.parametrize("run", [1, 2])
def test_capture_all_through_prefill_collapses_the_tail_but_starves_ttft(impl, recorded, run):
    sig = _sig(impl, recorded, "colocated-chunk64", "pd-all", run)
    cond = _sig(impl, recorded, "colocated-chunk64", "pd-conditional", run)
    assert sig.itl_p99_ratio <= PD_ALL_P99_RATIO_MAX and sig.itl_p99_ratio < cond.itl_p99_ratio, (
        f"run {run}: with every prefill off decode, ITL p99 must collapse (<= x{PD_ALL_P99_RATIO_MAX}, and below "
        f"the conditional setup's x{cond.itl_p99_ratio:.2f}); got x{sig.itl_p99_ratio:.2f}")  # fmt: skip
    floor = max(PD_ALL_TOLL_PCT_MIN, PD_ALL_TOLL_VS_CONDITIONAL_MIN * cond.ttft_change_pct)
    assert sig.ttft_change_pct >= floor, (
        f"run {run}: one prefill core for every prompt makes short prompts queue behind long ones: the TTFT toll "
        f"must be >= {PD_ALL_TOLL_PCT_MIN}% and >= {PD_ALL_TOLL_VS_CONDITIONAL_MIN}x the conditional toll "
        f"({cond.ttft_change_pct:+.1f}%); got {sig.ttft_change_pct:+.1f}%")  # fmt: skip


@pytest.mark.lab02_task5
@pytest.mark.parametrize("run", [1, 2])
def test_capture_default_budget_stalls_hide_beyond_p99(impl, recorded, run):
    gaps = _gaps(impl, recorded, "colocated", run)
    p50, p99, p999 = (impl.percentile(gaps, p) for p in (50, 99, 99.9))
    stalls = sum(g > 0.25 for g in gaps) / len(gaps)
    assert 0 < stalls < 0.01 and p99 < 0.25, (
        f"run {run}: with the default chunk budget the stalls are rare (under 1% of gaps) so p99 stays under "
        f"250 ms; got {stalls:.2%} of gaps over 250 ms, p99 {p99 * 1e3:.1f} ms")  # fmt: skip
    assert p999 >= 10 * p99 and max(gaps) >= 1.0, (
        f"run {run}: p99.9 and the max show what p99 hides (a whole long prefill in one step); got p50 "
        f"{p50 * 1e3:.1f}, p99 {p99 * 1e3:.1f}, p99.9 {p999 * 1e3:.1f}, max {max(gaps) * 1e3:.0f} ms")  # fmt: skip

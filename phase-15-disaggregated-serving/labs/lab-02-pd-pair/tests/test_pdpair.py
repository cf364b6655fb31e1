"""Ungraded: checks lab-02's given support code (pdpair), not student work."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
import yaml

from pdpair.load.client import get_text, metric_sum, parse_metrics, stream_request
from pdpair.pair.procs import start_listening, stop_processes
from pdpair.pair.spec import ModelShape, SpecError, load_pair_spec, parse_pair_spec, parse_vllm_argv
from pdpair.proxy import (
    METRIC_HELP,
    ErrorReply,
    ProxyConfig,
    ProxyContext,
    ProxyServer,
    ProxyThread,
    Relay,
    UpstreamError,
)
from pdpair.testing.fakes import FakeDecode, FakePrefill, token_text

pytestmark = pytest.mark.ungraded
LAB = Path(__file__).resolve().parents[1]  # the lab folder


def run(coro, timeout_s: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


# ---------------------------------------------------------------------------------------------- spec


def test_cpu_spec_resolves_both_sides():
    spec = load_pair_spec(LAB / "pair.cpu.yaml")
    assert spec.prefill.kv_role == "kv_producer" and spec.decode.kv_role == "kv_consumer"
    assert spec.prefill.model == str((LAB / "models" / "tiny-llama").resolve())
    assert (spec.prefill.port, spec.decode.port) == (8100, 8200)
    assert (spec.prefill.cpu_cores, spec.decode.cpu_cores) == ("0", "1")
    assert spec.prefill.kv_buffer_device == "cpu" and spec.decode.block_size == 32
    gpu = load_pair_spec(LAB / "pair.2gpu-hosts.yaml")
    assert gpu.decode.kv_buffer_device == "cuda" and gpu.decode.host == "10.0.0.2"


def test_unknown_keys_and_bad_types_are_rejected(tmp_path):
    with pytest.raises(SpecError, match="kv_rnak"):
        parse_pair_spec({"model": "m", "port": 1, "kv_rnak": 0}, tmp_path)
    with pytest.raises(SpecError, match="extra_args"):
        parse_pair_spec({"model": "m", "port": 1, "extra_args": "--enforce-eager"}, tmp_path)
    with pytest.raises(SpecError, match="port"):
        parse_pair_spec({"model": "m", "port": "80"}, tmp_path)
    with pytest.raises(SpecError, match="required"):
        parse_pair_spec({"model": "m"}, tmp_path)


def test_yaml_is_read_with_safe_load(tmp_path):
    bad = tmp_path / "pair.yaml"
    bad.write_text("model: !!python/object/apply:os.system ['true']\nport: 1\n")
    with pytest.raises(yaml.YAMLError):
        load_pair_spec(bad)


def test_shape_comes_from_config_json_and_hf_overrides(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    cfg = {"num_hidden_layers": 12, "num_attention_heads": 16, "num_key_value_heads": 4, "hidden_size": 1024}
    (model / "config.json").write_text(json.dumps(cfg))
    spec = parse_pair_spec(
        {"model": "m", "port": 1, "decode": {"hf_overrides": {"num_hidden_layers": 6}}}, tmp_path
    )
    assert spec.prefill.shape == ModelShape(12, 4, 64)
    assert spec.decode.shape == ModelShape(6, 4, 64)
    assert parse_pair_spec({"model": "absent", "port": 1}, tmp_path).prefill.shape is None


def test_parse_vllm_argv():
    mod, flags = parse_vllm_argv(["py", "-m", "x.y", "--a", "1", "--flag", "--j", '{"k": 1}'])
    assert mod == "x.y" and flags == {"--a": "1", "--flag": True, "--j": '{"k": 1}'}
    for bad in ("py -m x", ["py", "x"], ["py", "-m", "x", "pos"], ["py", "-m", "x", "--a", "--a"]):
        with pytest.raises(ValueError):
            parse_vllm_argv(bad)


# --------------------------------------------------------------------------------------------- fakes


def test_fakes_speak_the_pd_protocol():
    async def scenario():
        async with FakePrefill() as p, FakeDecode(prefills=[p], require_kv_params=True) as d:
            async with aiohttp.ClientSession() as s:
                body = {"prompt": "x", "max_tokens": 1, "stream": False,
                        "kv_transfer_params": {"do_remote_decode": True}}  # fmt: skip
                async with s.post(p.url + "/v1/completions", json=body, headers={"X-Request-Id": "r1"}) as r:
                    answer = await r.json()
                params = answer["kv_transfer_params"]
                assert params["do_remote_prefill"] is True and params["remote_engine_id"] == p.engine_id
                assert params["transfer_mode"] == "pull" and params["remote_block_ids"]
                ok = await stream_request(s, d.url, "/v1/completions",
                                          {"prompt": "x", "max_tokens": 3, "stream": True, "kv_transfer_params": params})  # fmt: skip
                assert (
                    ok.status == 200
                    and ok.texts == [token_text({"prompt": "x"}, i) for i in range(3)]
                    and ok.done
                )
                forged = dict(params, remote_block_ids=[99])
                bad = await stream_request(
                    s, d.url, "/v1/completions", {"prompt": "x", "kv_transfer_params": forged}
                )
                assert bad.status == 500 and "KV load failed" in bad.error["message"]
                none = await stream_request(s, d.url, "/v1/completions", {"prompt": "x"})
                assert none.status == 400

    run(scenario())


# --------------------------------------------------------------------------------------------- proxy


class DecodeOnly:
    """A minimal non-student policy: everything to one decode upstream."""

    def __init__(self, decode_url: str, boom: Exception | None = None, garbage: bool = False) -> None:
        self.decode_url, self.boom, self.garbage, self.calls = decode_url, boom, garbage, 0

    async def handle(self, ctx: ProxyContext, path, body, request_id):
        self.calls += 1
        if self.boom is not None:
            raise self.boom
        if self.garbage:
            return "not a reply"
        try:
            stream = await ctx.open_stream(
                "decode", self.decode_url, path, body, {"X-Request-Id": request_id}
            )
        except UpstreamError as err:
            return ErrorReply(503, {"error": {"upstream": err.url}})
        return Relay(stream, mode="fallback", reason="test")


def test_malformed_json_is_400_before_the_policy():
    async def scenario():
        async with FakeDecode() as d:
            policy = DecodeOnly(d.url)
            async with ProxyServer(policy) as proxy, aiohttp.ClientSession() as s:
                for raw in (b"{not json", b"[1, 2]"):
                    async with s.post(proxy.url + "/v1/completions", data=raw) as r:
                        assert r.status == 400, r.status
                        assert (await r.json())["error"]["type"] == "invalid_request_error"
                assert policy.calls == 0
                assert (
                    metric_sum(
                        await get_text(s, proxy.url + "/metrics"), "pdproxy_responses_total", status="400"
                    )
                    == 2
                )

    run(scenario())


def test_health_and_metrics_format():
    async def scenario():
        async with FakeDecode() as d, ProxyServer(DecodeOnly(d.url)) as proxy, aiohttp.ClientSession() as s:
            assert proxy.config.host == "127.0.0.1"
            async with s.get(proxy.url + "/health") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            res = await stream_request(
                s, proxy.url, "/v1/completions", {"prompt": "m", "max_tokens": 2, "stream": True}
            )
            assert res.headers["X-PD-Mode"] == "fallback" and res.headers["X-PD-Fallback-Reason"] == "test"
            text = await get_text(s, proxy.url + "/metrics")
            for name in METRIC_HELP:
                assert f"# TYPE {name} " in text, name
            samples = parse_metrics(text)
            assert ("pdproxy_handoffs_total", {}, 0.0) in samples
            assert metric_sum(text, "pdproxy_fallbacks_total", reason="test") == 1
            assert metric_sum(text, "pdproxy_requests_total", endpoint="/v1/completions") == 1

    run(scenario())


def test_decode_dying_mid_stream_ends_with_an_error_event():
    async def scenario():
        async with FakeDecode(behaviour="die_mid_stream", die_after=2) as d:
            async with ProxyServer(DecodeOnly(d.url)) as proxy, aiohttp.ClientSession() as s:
                res = await stream_request(
                    s, proxy.url, "/v1/completions", {"prompt": "z", "max_tokens": 5, "stream": True}
                )
                assert res.status == 200 and len(res.texts) == 2 and not res.done
                assert res.error is not None and res.error["upstream"] == d.url
                text = await get_text(s, proxy.url + "/metrics")
                assert (
                    metric_sum(text, "pdproxy_upstream_errors_total", role="decode", kind="disconnected") == 1
                )

    run(scenario())


def test_policy_exceptions_are_recorded_and_reraised():
    async def scenario():
        boom = NotImplementedError("lab-02 task 4: example")
        async with FakeDecode() as d:
            proxy = ProxyServer(DecodeOnly(d.url, boom=boom))
            await proxy.start()
            try:
                async with aiohttp.ClientSession() as s:
                    res = await stream_request(s, proxy.url, "/v1/completions", {"prompt": "x"})
                    assert res.status == 500 and res.error["type"] == "proxy_policy_error"
            finally:
                await proxy.stop()
            with pytest.raises(NotImplementedError) as info:
                proxy.raise_policy_error()
            assert info.value is boom
            garbage = ProxyServer(DecodeOnly(d.url, garbage=True))
            with pytest.raises(TypeError, match="Relay"):
                async with garbage, aiohttp.ClientSession() as s:
                    assert (
                        await stream_request(s, garbage.url, "/v1/completions", {"prompt": "x"})
                    ).status == 500

    run(scenario())


def test_upstream_calls_have_timeouts():
    async def scenario():
        async with FakePrefill(behaviour="hang") as p, aiohttp.ClientSession() as s:
            from pdpair.proxy import Metrics

            ctx = ProxyContext(s, ProxyConfig(prefill_timeout_s=0.2, decode_timeout_s=0.2), Metrics())
            t0 = time.monotonic()
            with pytest.raises(UpstreamError) as info:
                await ctx.post_json("prefill", p.url, "/v1/completions", {"prompt": "x"})
            assert info.value.kind == "timeout" and time.monotonic() - t0 < 1.5
            with pytest.raises(UpstreamError) as info:
                await ctx.open_stream("decode", p.url, "/v1/completions", {"prompt": "x"})
            assert info.value.kind == "timeout"
            await p.stop()
            with pytest.raises(UpstreamError) as info:
                await ctx.post_json("prefill", p.url, "/v1/completions", {"prompt": "x"})
            assert info.value.kind == "unreachable"

    run(scenario())


def test_proxy_thread_for_sync_callers():
    loop = asyncio.new_event_loop()
    decode = FakeDecode()
    loop.run_until_complete(decode.start())
    try:
        # the fake needs its loop running to answer: serve it from a thread of its own
        import threading

        t = threading.Thread(target=loop.run_forever, daemon=True)
        t.start()
        with ProxyThread(DecodeOnly(decode.url)) as proxy:
            with urllib.request.urlopen(proxy.url + "/health", timeout=5) as r:
                assert json.load(r)["status"] == "ok"
            req = urllib.request.Request(proxy.url + "/v1/completions", data=json.dumps({"prompt": "t", "max_tokens": 2}).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=5) as r:
                assert json.load(r)["choices"][0]["text"] == token_text({"prompt": "t"}, 0) + token_text(
                    {"prompt": "t"}, 1
                )
        with pytest.raises(RuntimeError, match="boom"):
            with ProxyThread(DecodeOnly(decode.url, boom=RuntimeError("boom"))) as proxy:
                try:
                    urllib.request.urlopen(
                        urllib.request.Request(proxy.url + "/v1/completions", data=b"{}"), timeout=5
                    )
                except urllib.error.HTTPError as err:
                    assert err.code == 500
    finally:
        asyncio.run_coroutine_threadsafe(decode.kill(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


# ----------------------------------------------------------------------------------------------- CLI


def test_proxy_and_fakes_run_as_processes():
    procs: list[subprocess.Popen] = []
    try:
        p, prefill_url = start_listening(["pdpair.testing.fakes", "--role", "prefill"])
        procs.append(p)
        d, decode_url = start_listening(["pdpair.testing.fakes", "--role", "decode"])
        procs.append(d)
        x, proxy_url = start_listening(["pdpair.proxy", "--impl", "solution", "--prefill", prefill_url, "--decode", decode_url,
                               "--port", "0", "--prefill-timeout", "5"])  # fmt: skip
        procs.append(x)
        assert proxy_url.startswith("http://127.0.0.1:")

        async def scenario():
            async with aiohttp.ClientSession() as s:
                res = await stream_request(
                    s, proxy_url, "/v1/completions", {"prompt": "cli", "max_tokens": 3, "stream": True}
                )
                assert (
                    res.status == 200 and res.headers["X-PD-Mode"] == "disaggregated" and len(res.texts) == 3
                )
                text = await get_text(s, proxy_url + "/metrics")
                assert metric_sum(text, "pdproxy_handoffs_total") == 1

        run(scenario())
    finally:
        stop_processes(procs)  # only the processes this test started, by their pid


def test_proxy_cli_has_a_flag_per_limit_and_refuses_bad_values(capsys):
    from pdpair.proxy import main
    from pdpair.proxy.config import ProxyConfig

    with pytest.raises(SystemExit) as info:
        main(["--decode", "http://127.0.0.1:1", "--help"])
    assert info.value.code == 0
    usage = capsys.readouterr().out
    for flag in ("--max-body-bytes", "--max-json-depth", "--header-timeout", "--idle-timeout", "--body-timeout",
                 "--client-stall-timeout", "--max-connections", "--max-upstream-body-bytes", "--no-uvloop"):  # fmt: skip
        assert flag in usage, flag
    with pytest.raises(SystemExit) as info:
        main(["--decode", "http://127.0.0.1:1", "--max-body-bytes", "0"])
    assert info.value.code == 2 and "max_body_bytes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="header_timeout_s"):
        ProxyConfig(header_timeout_s=0)


def test_error_events_are_counted_only_when_whole_and_an_error_object():
    from pdpair.proxy.relay import count_error_events

    err = b'data: {"error": {"message": "Internal server error", "type": "InternalServerError", "code": 500}}\n\n'
    tok = b'data: {"choices": [{"text": "error"}]}\n\n'
    assert count_error_events(tok + b"data: [DONE]\n\n") == 0, (
        "a token whose text says error is no error event"
    )
    assert count_error_events(tok + err + b"data: [DONE]\n\n") == 1
    assert count_error_events(err.replace(b"\n", b"\r\n") * 2) == 2, "CRLF framing counts too"
    assert count_error_events(b'data: {"error"\n\n') == 0, "not JSON: not counted"


def test_fake_decode_counters_follow_each_path():
    """The fake's /metrics move as the real pair's did (task 6's tier tests pin the real ones)."""

    async def scenario():
        async with (
            FakePrefill() as p,
            FakeDecode(prefills=[p]) as d,
            FakeDecode(prefills=[p], connector=False) as nc,
        ):
            async with aiohttp.ClientSession() as s:
                ask = {
                    "prompt": [1, 2, 3, 4],
                    "max_tokens": 1,
                    "stream": False,
                    "kv_transfer_params": {"do_remote_decode": True},
                }
                async with s.post(p.url + "/v1/completions", json=ask, headers={"X-Request-Id": "a"}) as r:
                    params = (await r.json())["kv_transfer_params"]
                assert p.held_requests() == [params["remote_request_id"]], (
                    "prefill holds the blocks until a read"
                )
                body = {"prompt": [1, 2, 3, 4], "max_tokens": 2, "kv_transfer_params": params}
                ok = await stream_request(s, d.url, "/v1/completions", body)
                text = await get_text(s, d.url + "/metrics")
                assert ok.status == 200 and p.held_requests() == []
                assert (
                    metric_sum(text, "vllm:prompt_tokens_by_source_total", source="external_kv_transfer") == 4
                )
                assert metric_sum(text, "vllm:nixl_xfer_time_seconds_count") == 1
                forged = dict(params, remote_request_id="other")
                bad = await stream_request(
                    s, d.url, "/v1/completions", {**body, "kv_transfer_params": forged}
                )
                text = await get_text(s, d.url + "/metrics")
                assert bad.status == 500 and metric_sum(text, "vllm:nixl_num_failed_transfers_total") == 1
                assert metric_sum(text, "vllm:prompt_tokens_cached_by_source_total", source="p2p") == 8, (
                    "admission"
                )
                local = await stream_request(s, nc.url, "/v1/completions", body)
                text = await get_text(s, nc.url + "/metrics")
                assert local.status == 200 and "vllm:nixl_" not in text
                assert metric_sum(text, "vllm:prompt_tokens_by_source_total", source="local_compute") == 4
                dead = await stream_request(
                    s, d.url, "/v1/completions", {**body, "kv_transfer_params": {"do_remote_prefill": True}}
                )
                assert dead.status == 500 and d.dead, (
                    "do_remote_prefill without blocks kills vLLM 0.32's engine core"
                )

    run(scenario())

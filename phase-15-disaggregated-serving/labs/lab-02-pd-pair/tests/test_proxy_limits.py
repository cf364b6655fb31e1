"""Ungraded: the proxy plumbing's limits, one finding each (pdpair.proxy, pdpair.testing.fakes, pdpair.load.client).

Every test here failed on the plumbing before it had the limit it checks: tracebacks kept forever, a
deeply nested body answered 500 after a RecursionError, no read or idle timeouts, an error event glued
to a torn SSE event, a cut stream answered as if complete, credentials shown in headers and metrics,
``/metrics`` drifting, a capitalised ``Content-Type`` buffered, unbounded upstream bodies, a 1 MiB body
limit that refused a 150k-token prompt, ``charset=bogus`` as a bare 500, the fake decode's 500 on
``max_tokens: "abc"``.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web

from pdpair.load.client import get_text, metric_sum, stream_request, wait_for
from pdpair.proxy import (
    ErrorReply,
    ProxyConfig,
    ProxyContext,
    ProxyServer,
    Relay,
    UpstreamError,
    body_limit_for,
    redact_url,
)
from pdpair.testing.fakes import FakeDecode, token_text

pytestmark = pytest.mark.ungraded
PATH = "/v1/completions"


def run(coro, timeout_s: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


class DecodeOnly:
    """Everything to one decode upstream (no student code involved)."""

    def __init__(self, decode_url: str, boom: Exception | None = None, bad_relay: bool = False) -> None:
        self.decode_url, self.boom, self.bad_relay, self.calls = decode_url, boom, bad_relay, 0

    async def handle(self, ctx: ProxyContext, path, body, request_id):
        self.calls += 1
        if self.boom is not None:
            raise type(self.boom)(*self.boom.args)
        try:
            stream = await ctx.open_stream(
                "decode", self.decode_url, path, body, {"X-Request-Id": request_id}
            )
        except UpstreamError as err:
            return ErrorReply(503, {"error": {"message": str(err), "upstream": err.url}})
        if self.bad_relay:
            stream.content_type = None  # a plumbing bug: the relay crashes on it
        return Relay(stream, mode="fallback", reason="test")


def consistent(text: str) -> tuple[float, float, float]:
    requests = metric_sum(text, "pdproxy_requests_total")
    responses = metric_sum(text, "pdproxy_responses_total")
    inflight = metric_sum(text, "pdproxy_inflight_requests")
    assert requests == responses + inflight, (requests, responses, inflight)
    return requests, responses, inflight


async def raw_request(url: str, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, timeout_s: float) -> tuple[bool, bytes]:
    """(True, what arrived) if the server closed the connection within the deadline."""
    got = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            if not chunk:
                return True, got
            got += chunk
    except (TimeoutError, ConnectionError):
        return isinstance(reader.exception(), ConnectionError), got
    return False, got


# ------------------------------------------------------------------------------------ memory, bodies


def test_policy_error_log_is_bounded_and_only_the_first_keeps_its_traceback():
    async def scenario():
        async with FakeDecode() as d:
            proxy = ProxyServer(
                DecodeOnly(d.url, boom=RuntimeError("boom")), ProxyConfig(max_policy_errors_kept=4)
            )
            await proxy.start()
            try:
                async with aiohttp.ClientSession() as s:
                    for _ in range(30):
                        assert (await stream_request(s, proxy.url, PATH, {"prompt": "x"})).status == 500
            finally:
                await proxy.stop()
            assert len(proxy.policy_errors) == 4
            assert proxy.policy_errors[0].__traceback__ is not None
            assert all(e.__traceback__ is None for e in proxy.policy_errors[1:])
            assert proxy.metrics.value("pdproxy_policy_errors_total") == 30

    run(scenario())


def nested(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


def test_deeply_nested_bodies_are_400_before_the_policy():
    async def scenario():
        async with FakeDecode() as d:
            policy = DecodeOnly(d.url)
            async with ProxyServer(policy) as proxy, aiohttp.ClientSession() as s:
                for depth in (65, 600, 200_000):  # the last one is past the JSON parser's recursion limit
                    async with s.post(proxy.url + PATH, data=nested(depth)) as r:
                        assert r.status == 400, (depth, r.status)
                        assert "nested deeper" in (await r.json())["error"]["message"]
                async with s.post(proxy.url + PATH, data=nested(60)) as r:
                    assert r.status == 200  # within the limit: served
                assert policy.calls == 1
                consistent(await get_text(s, proxy.url + "/metrics"))

    run(scenario())


def test_default_body_limit_admits_a_150k_token_prompt_and_is_configurable():
    prompt = list(range(100_000, 250_000))  # 150k six-digit token ids
    raw = json.dumps({"prompt": prompt, "max_tokens": 1}).encode()
    assert len(raw) > 1024 * 1024  # more than aiohttp's 1 MiB default
    assert body_limit_for(150_000) > len(raw)

    async def scenario():
        async with FakeDecode() as d:
            async with ProxyServer(DecodeOnly(d.url)) as proxy, aiohttp.ClientSession() as s:
                async with s.post(proxy.url + PATH, data=raw) as r:
                    assert r.status == 200, await r.text()
            async with ProxyServer(DecodeOnly(d.url), ProxyConfig(max_body_bytes=64 * 1024)) as proxy:
                async with aiohttp.ClientSession() as s:
                    for _ in range(3):
                        async with s.post(proxy.url + PATH, data=raw) as r:
                            assert r.status == 413
                            assert "max_body_bytes" in (await r.json())["error"]["message"]
                    text = await get_text(s, proxy.url + "/metrics")
                    assert metric_sum(text, "pdproxy_responses_total", status="413") == 3
                    consistent(text)

    run(scenario())


def test_unknown_charset_is_415_not_a_bare_500():
    async def scenario():
        async with FakeDecode() as d, ProxyServer(DecodeOnly(d.url)) as proxy, aiohttp.ClientSession() as s:
            headers = {"Content-Type": "application/json; charset=bogus"}
            async with s.post(proxy.url + PATH, data=b'{"prompt": "x"}', headers=headers) as r:
                assert r.status == 415 and "charset" in (await r.json())["error"]["message"]
            headers = {"Content-Type": "application/json; charset=utf-16"}
            async with s.post(
                proxy.url + PATH, data='{"prompt": "x"}'.encode("utf-16"), headers=headers
            ) as r:
                assert r.status == 200
            async with s.post(proxy.url + PATH, data=b'{"prompt": "\xff"}',
                              headers={"Content-Type": "application/json; charset=utf-8"}) as r:  # fmt: skip
                assert r.status == 400
            consistent(await get_text(s, proxy.url + "/metrics"))

    run(scenario())


# -------------------------------------------------------------------------------------- upstream side


async def odd_upstream(content_type: str, gap_s: float = 0.0, json_bytes: int = 0):
    """A tiny upstream: two SSE events ``gap_s`` apart with this Content-Type, or a big JSON answer."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if json_bytes:
            return web.json_response({"blob": "x" * json_bytes})
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"text": "a"}]}\n\n')
        await asyncio.sleep(gap_s)
        await resp.write(b'data: {"choices": [{"text": "b"}]}\n\ndata: [DONE]\n\n')
        return resp

    app = web.Application()
    app.router.add_post(PATH, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def test_event_stream_is_recognised_in_any_letter_case():
    async def scenario():
        runner, url = await odd_upstream("Text/Event-Stream; Charset=UTF-8", gap_s=1.0)
        try:
            async with ProxyServer(DecodeOnly(url)) as proxy, aiohttp.ClientSession() as s:
                res = await stream_request(s, proxy.url, PATH, {"prompt": "x"})
                assert res.texts == ["a", "b"] and res.done
                # buffered, both events would arrive together; streamed, they keep the upstream's gap
                assert res.arrivals[1] - res.arrivals[0] > 0.5, "the first event was held back (buffered)"
        finally:
            await runner.cleanup()

    run(scenario())


def test_upstream_success_bodies_are_bounded():
    async def scenario():
        runner, url = await odd_upstream("", json_bytes=2 * 1024 * 1024)
        cfg = ProxyConfig(max_upstream_body_bytes=1024 * 1024)
        try:
            async with ProxyServer(DecodeOnly(url), cfg) as proxy, aiohttp.ClientSession() as s:
                async with s.post(proxy.url + PATH, json={"prompt": "x"}) as r:
                    assert r.status == 502 and "bound" in (await r.json())["error"]["message"]
                from pdpair.proxy import Metrics

                ctx = ProxyContext(s, cfg, Metrics())
                with pytest.raises(UpstreamError) as info:
                    await ctx.post_json("prefill", url, PATH, {"prompt": "x"})
                assert info.value.kind == "bad_response"
        finally:
            await runner.cleanup()

    run(scenario())


@pytest.mark.parametrize(
    ("behaviour", "kind"), [("cut_mid_event", "disconnected"), ("end_early", "truncated")]
)
def test_a_cut_stream_keeps_whole_events_and_ends_with_an_error_never_done(behaviour, kind):
    async def scenario():
        async with FakeDecode(behaviour=behaviour, die_after=2) as d:
            async with ProxyServer(DecodeOnly(d.url)) as proxy, aiohttp.ClientSession() as s:
                res = await stream_request(
                    s, proxy.url, PATH, {"prompt": "q", "max_tokens": 5, "stream": True}
                )
                assert res.malformed == [], f"torn events reached the client: {res.malformed}"
                assert res.texts == [token_text({"prompt": "q"}, i) for i in range(2)]
                assert res.error is not None and kind in res.error["message"] and not res.done
                text = await get_text(s, proxy.url + "/metrics")
                assert metric_sum(text, "pdproxy_upstream_errors_total", role="decode", kind=kind) == 1
                consistent(text)

    run(scenario())


def test_credentials_in_upstream_urls_are_never_shown():
    async def scenario():
        async with FakeDecode() as d:
            secret_url = d.url.replace("http://", "http://alice:s3cret@")
            assert redact_url(secret_url) == d.url.replace("http://", "http://***@")
            upstreams = {"decode": [secret_url]}
            async with ProxyServer(DecodeOnly(secret_url), upstreams=upstreams) as proxy:
                async with aiohttp.ClientSession() as s:
                    res = await stream_request(
                        s, proxy.url, PATH, {"prompt": "x", "max_tokens": 2, "stream": True}
                    )
                    assert res.status == 200 and "s3cret" not in json.dumps(dict(res.headers))
                    await d.kill()
                    down = await stream_request(s, proxy.url, PATH, {"prompt": "x"})
                    assert down.status == 503 and "s3cret" not in json.dumps(down.body)
                    for route in ("/health", "/metrics"):
                        text = await get_text(s, proxy.url + route)
                        assert "s3cret" not in text and "alice" not in text, route

    run(scenario())


def test_fake_decode_answers_400_to_a_non_integer_max_tokens_as_vllm_does():
    async def scenario():
        async with FakeDecode() as d, aiohttp.ClientSession() as s:
            for bad in ("abc", 2.5, 0, True, [1]):
                async with s.post(d.url + PATH, json={"prompt": "x", "max_tokens": bad}) as r:
                    body = await r.json()
                    assert r.status == 400 and body["error"]["param"] == "max_tokens", (bad, body)
            async with s.post(d.url + PATH, data=b"{oops") as r:
                assert r.status == 400
            ok = await stream_request(s, d.url, PATH, {"prompt": "x", "max_tokens": "3", "stream": True})
            assert len(ok.texts) == 3

    run(scenario())


# -------------------------------------------------------------------------------- connections, metrics


def test_metrics_stay_consistent_under_bare_500s_and_abandoned_bodies():
    async def scenario():
        async with FakeDecode() as d:
            async with ProxyServer(DecodeOnly(d.url, bad_relay=True)) as proxy, aiohttp.ClientSession() as s:
                for _ in range(3):
                    async with s.post(proxy.url + PATH, json={"prompt": "x"}) as r:
                        assert r.status == 500 and "Traceback" not in await r.text()
                writers = []
                for _ in range(5):  # promise 1000 bytes, send 10, go away
                    _, w = await raw_request(proxy.url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                             b"Content-Length: 1000\r\n\r\n0123456789")  # fmt: skip
                    writers.append(w)
                await asyncio.sleep(0.2)
                for w in writers:
                    w.close()
                assert await wait_for(lambda: proxy.metrics.value("pdproxy_inflight_requests") == 0, 3.0)
                text = await get_text(s, proxy.url + "/metrics")
                assert consistent(text)[0] == 8
                assert metric_sum(text, "pdproxy_responses_total", status="499") == 5
                assert metric_sum(text, "pdproxy_internal_errors_total") == 3

    run(scenario())


def test_half_sent_requests_are_closed_within_the_header_and_body_timeouts():
    async def scenario():
        cfg = ProxyConfig(header_timeout_s=0.5, body_timeout_s=0.5)
        async with FakeDecode() as d, ProxyServer(DecodeOnly(d.url), cfg) as proxy:
            started = time.monotonic()
            conns = [await raw_request(proxy.url, b"POST /v1/compl") for _ in range(10)]
            conns += [await raw_request(proxy.url, b"") for _ in range(5)]  # connect, send nothing
            body = [await raw_request(proxy.url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 100\r\n\r\n{") for _ in range(5)]  # fmt: skip
            results = await asyncio.gather(*(closed_within(r, 5.0) for r, _ in conns + body))
            assert all(closed for closed, _ in results), (
                f"a half-sent request kept its connection open: {results}"
            )
            assert all(got.startswith(b"HTTP/1.1 408") for _, got in results[-5:]), results[-5:]
            assert time.monotonic() - started < 5.0  # 0.5 s timeouts; slack for a busy machine
            m = proxy.metrics
            assert m.value("pdproxy_client_timeouts_total", phase="header") == 15
            assert m.value("pdproxy_client_timeouts_total", phase="body") == 5
            for _, w in conns + body:
                w.close()

    run(scenario())


def test_kept_alive_connections_close_after_the_idle_timeout():
    async def scenario():
        cfg = ProxyConfig(idle_timeout_s=0.5)
        async with FakeDecode() as d, ProxyServer(DecodeOnly(d.url), cfg) as proxy:
            reader, writer = await raw_request(proxy.url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                               b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                               b'Content-Length: 15\r\n\r\n{"prompt": "x"}')  # fmt: skip
            closed, got = await closed_within(reader, 5.0)
            assert closed and got.count(b"HTTP/1.1 200") == 2
            assert proxy.metrics.value("pdproxy_client_timeouts_total", phase="idle") == 1
            writer.close()

    run(scenario())


def test_a_connection_in_use_is_never_timed_out():
    async def scenario():
        cfg = ProxyConfig(header_timeout_s=0.4, idle_timeout_s=0.4)
        async with FakeDecode() as d, ProxyServer(DecodeOnly(d.url), cfg) as proxy:
            reader, writer = await raw_request(proxy.url, b"")
            for _ in range(8):  # a monitor polling /health on one kept-alive connection, 2.4 s in all
                await asyncio.sleep(0.3)
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
                assert head.startswith(b"HTTP/1.1 200"), head
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            assert proxy.metrics.value("pdproxy_client_timeouts_total") == 0
            writer.close()

    run(scenario())


def test_a_client_that_never_reads_does_not_hold_a_decode_stream():
    async def scenario():
        cfg = ProxyConfig(client_stall_timeout_s=0.5)
        async with FakeDecode(pad_bytes=64 * 1024) as d, ProxyServer(DecodeOnly(d.url), cfg) as proxy:
            body = json.dumps({"prompt": "slow", "max_tokens": 5000, "stream": True}).encode()
            _, writer = await raw_request(proxy.url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            started = time.monotonic()
            assert await wait_for(lambda: d.cancelled, 8.0), "decode was never released"
            assert time.monotonic() - started < 8.0
            assert proxy.metrics.value("pdproxy_client_timeouts_total", phase="write") == 1
            assert proxy.metrics.value("pdproxy_inflight_requests") == 0
            writer.close()

    run(scenario())


def test_connection_count_is_bounded_and_idle_ones_make_room():
    async def scenario():
        cfg = ProxyConfig(max_connections=8)
        async with FakeDecode() as d, ProxyServer(DecodeOnly(d.url), cfg) as proxy:
            idle = [await raw_request(proxy.url, b"") for _ in range(30)]
            await asyncio.sleep(0.1)
            assert proxy.metrics.value("pdproxy_open_connections") <= 8
            async with aiohttp.ClientSession() as s:
                res = await stream_request(s, proxy.url, PATH, {"prompt": "ok", "max_tokens": 3, "stream": True},
                                           timeout_s=5)  # fmt: skip
                assert res.texts == [token_text({"prompt": "ok"}, i) for i in range(3)] and res.done
            assert proxy.metrics.value("pdproxy_connections_refused_total") >= 22
            for _, w in idle:
                w.close()

    run(scenario())

"""Ungraded chaos suite: the proxy, as its own process, under bounded hostile input beside healthy streams.

Each test starts fake prefill/decode upstreams (in this process) and ``python -m pdpair.proxy`` (the
solution's policy, short timeouts), keeps healthy streams running through the full handoff, throws a
bounded amount of one family of hostile input at it, and then asserts that the proxy is still up and
answering within a deadline, that no healthy stream lost or duplicated a token or saw a torn event,
that its memory (RSS, Linux) and open connections stay bounded, and that ``/metrics`` is consistent
(requests = responses + in flight). The whole file runs in well under 20 s on two busy cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from pdpair.load.client import get_text, metric_sum, stream_request, wait_for
from pdpair.pair.procs import start_listening, stop_processes
from pdpair.testing.fakes import FakeDecode, FakePrefill, token_text

pytestmark = pytest.mark.ungraded
PATH = "/v1/completions"
FLAGS = ["--header-timeout", "1", "--idle-timeout", "2", "--body-timeout", "1", "--client-stall-timeout", "1",
         "--max-connections", "64", "--max-body-bytes", str(1024 * 1024), "--prefill-timeout", "5",
         "--decode-timeout", "5"]  # fmt: skip


def rss_mib(pid: int) -> float | None:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


@contextlib.asynccontextmanager
async def chaos_stack(**decode_kw):
    async with FakePrefill() as p, FakeDecode(prefills=[p], require_kv_params=True, **decode_kw) as d:
        proc: subprocess.Popen | None = None
        try:
            proc, url = start_listening(["pdpair.proxy", "--impl", "solution", "--prefill", p.url,
                                         "--decode", d.url, "--port", "0", *FLAGS])  # fmt: skip
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
                yield url, proc, d, s
        finally:
            if proc is not None:
                stop_processes([proc])


async def healthy(s: aiohttp.ClientSession, url: str, tag: str, rounds: int, tokens: int = 8) -> int:
    """Stream ``rounds`` requests one after another; every token exactly once, in order, then [DONE]."""
    for r in range(rounds):
        body = {"prompt": f"{tag}-{r}", "max_tokens": tokens, "stream": True}
        res = await stream_request(s, url, PATH, body, timeout_s=15)
        want = [token_text(body, i) for i in range(tokens)]
        assert res.status == 200 and res.headers["X-PD-Mode"] == "disaggregated", (res.status, res.error)
        assert res.texts == want and res.done and not res.malformed and res.error is None, (tag, r, res.texts)
    return rounds


async def settled_metrics(s: aiohttp.ClientSession, url: str, deadline_s: float = 10.0) -> str:
    """/metrics once nothing is in flight (answered within the deadline), checked for consistency."""
    end = time.monotonic() + deadline_s
    while True:
        started = time.monotonic()
        text = await get_text(s, url + "/metrics", timeout_s=5.0)
        assert time.monotonic() - started < 5.0, "the proxy answered /metrics late"
        inflight = metric_sum(text, "pdproxy_inflight_requests")
        if inflight == 0 or time.monotonic() > end:
            break
        await asyncio.sleep(0.05)
    requests, responses = (
        metric_sum(text, "pdproxy_requests_total"),
        metric_sum(text, "pdproxy_responses_total"),
    )
    assert requests == responses + inflight and inflight == 0, (requests, responses, inflight)
    return text


async def raw(url: str, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def status_of(s: aiohttp.ClientSession, url: str, data: bytes, headers: dict | None = None) -> int:
    async with s.post(url + PATH, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as r:
        await r.read()
        return r.status


def test_chaos_hostile_bodies_leave_memory_and_metrics_bounded():
    deep = b'{"prompt": ' + b"[" * 600 + b"1" + b"]" * 600 + b"}"  # 1.2 KB, 600 levels
    huge = b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    async def hostile(s, url):
        statuses = []
        for _ in range(300):
            statuses.append(await status_of(s, url, deep))
        for _ in range(10):
            statuses.append(await status_of(s, url, huge))
        for ctype in ("application/json; charset=bogus", "APPLICATION/JSON; charset=utf-8"):
            statuses += [
                await status_of(s, url, b'{"prompt": "\xff"}', {"Content-Type": ctype}) for _ in range(10)
            ]
        statuses += [await status_of(s, url, b"{not json") for _ in range(10)]
        statuses += [await status_of(s, url, json.dumps({"prompt": "x", "max_tokens": "abc"}).encode())]
        writers = []
        for _ in range(40):  # promise a body, send a third of it, go away
            _, w = await raw(
                url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n" + b"{" * 100
            )
            writers.append(w)
        await asyncio.sleep(0.1)
        for w in writers:
            w.close()
        return statuses

    async def scenario():
        async with chaos_stack() as (url, proc, _, s):
            await healthy(s, url, "warm", 5)
            before = rss_mib(proc.pid)
            statuses, *_ = await asyncio.gather(
                hostile(s, url), *(healthy(s, url, f"h{k}", 6) for k in range(4))
            )
            assert all(400 <= st < 500 for st in statuses), sorted(set(statuses))
            text = await settled_metrics(s, url)
            assert metric_sum(text, "pdproxy_policy_errors_total") == 0
            assert metric_sum(text, "pdproxy_internal_errors_total") == 0
            after = rss_mib(proc.pid)
            if before is not None:
                assert after - before < 30, f"proxy RSS grew {after - before:.1f} MiB"
            assert await healthy(s, url, "after", 2) == 2

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_chaos_slow_idle_and_stalled_clients_cannot_exhaust_the_proxy():
    async def scenario():
        async with chaos_stack(pad_bytes=16 * 1024) as (url, proc, decode, s):
            await healthy(s, url, "warm", 2)
            started = time.monotonic()
            slowloris = [
                await raw(url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-a: ") for _ in range(80)
            ]
            idle = [await raw(url, b"") for _ in range(120)]
            stall_body = json.dumps({"prompt": "stall", "max_tokens": 3000, "stream": True}).encode()
            stalled = [await raw(url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(stall_body), stall_body)) for _ in range(5)]  # fmt: skip
            await asyncio.gather(*(healthy(s, url, f"h{k}", 5) for k in range(4)))

            # slow and idle connections are gone after the header timeout; stalled streams after the stall one
            async def all_closed() -> bool:
                text = await get_text(s, url + "/metrics")
                return metric_sum(text, "pdproxy_open_connections") <= 8  # the healthy session's own

            deadline = time.monotonic() + 12  # timeouts of 1-2 s; slack for a busy machine
            while not await all_closed():
                assert time.monotonic() < deadline, "slow connections were still open after their timeouts"
                await asyncio.sleep(0.1)

            def stalled_released() -> bool:
                seen = [r for r in decode.requests if r.body.get("prompt") == "stall"]
                return len(seen) == 5 and all(r.outcome == "cancelled" for r in seen)

            assert await wait_for(stalled_released, max(0.5, deadline - time.monotonic())), [
                r.outcome for r in decode.requests if r.body.get("prompt") == "stall"]  # fmt: skip
            assert time.monotonic() - started < 20
            text = await settled_metrics(s, url)
            assert metric_sum(text, "pdproxy_client_timeouts_total", phase="write") == 5
            assert metric_sum(text, "pdproxy_client_timeouts_total") >= 5
            assert metric_sum(text, "pdproxy_connections_refused_total") > 0  # the limit was reached
            for _, w in slowloris + idle + stalled:
                w.close()
            assert await healthy(s, url, "after", 2) == 2

    asyncio.run(asyncio.wait_for(scenario(), 60))

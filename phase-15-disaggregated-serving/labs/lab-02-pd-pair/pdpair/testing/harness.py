"""The graded proxy tests' harness: YOUR policy inside the given proxy, between fake vLLM upstreams.

``pd_stack(impl, ...)`` starts ``n_prefill`` fake prefills and ``n_decode`` fake decodes on loopback
(free ports), builds ``impl.PDProxyPolicy`` over their URLs, runs it in a ``ProxyServer`` and yields a
``Stack``; everything is torn down on exit, and an exception your policy raised inside the server is
re-raised in the test with its own traceback (the server only answered 500). ``run`` gives every
scenario a hard deadline, so a hung proxy fails a test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from pdpair.load.client import StreamResult, get_text, metric_sum, stream_request
from pdpair.proxy import ProxyConfig, ProxyServer
from pdpair.testing.fakes import FakeDecode, FakePrefill, token_text

TEST_TIMEOUT_S = 20.0


def run(coro: Coroutine[Any, Any, Any], timeout_s: float = TEST_TIMEOUT_S) -> Any:
    """Run one async scenario with a hard deadline (a hung proxy fails the test, it never hangs it)."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


@dataclass
class Stack:
    proxy: ProxyServer
    prefills: list[FakePrefill]
    decodes: list[FakeDecode]
    session: aiohttp.ClientSession

    async def call(self, body: Any, path: str = "/v1/completions", **kw: Any) -> StreamResult:
        res = await stream_request(self.session, self.proxy.url, path, body, **kw)
        self.proxy.raise_policy_error()  # your policy's exception, raised here with its traceback
        return res

    async def metric(self, name: str, **labels: str) -> float:
        return metric_sum(await get_text(self.session, self.proxy.url + "/metrics"), name, **labels)


@contextlib.asynccontextmanager
async def pd_stack(
    impl: Any,
    n_prefill: int = 1,
    n_decode: int = 1,
    prefill_kw: dict | None = None,
    decode_kw: dict | None = None,
    policy_kw: dict | None = None,
    prefill_cls: type[FakePrefill] = FakePrefill,
    decode_cls: type[FakeDecode] = FakeDecode,
    **config: Any,
) -> AsyncIterator[Stack]:
    """The proxy (``ProxyConfig(**config)``) with YOUR policy over fakes; ``prefill_cls`` / ``decode_cls``
    may be ``FakePrefill`` / ``FakeDecode`` subclasses that answer differently."""
    prefills = [prefill_cls(**(prefill_kw or {})) for _ in range(n_prefill)]
    decodes = [decode_cls(prefills=prefills, **(decode_kw or {})) for _ in range(n_decode)]
    started = []
    proxy = None
    try:
        for fake in prefills + decodes:
            await fake.start()
            started.append(fake)
        policy = impl.PDProxyPolicy([p.url for p in prefills], [d.url for d in decodes], **(policy_kw or {}))
        proxy = ProxyServer(policy, ProxyConfig(**config))
        await proxy.start()
        async with aiohttp.ClientSession() as session:
            yield Stack(proxy, prefills, decodes, session)
    except Exception:
        if proxy is not None and proxy.policy_errors:  # the student's exception is the real cause
            raise proxy.policy_errors[0] from None
        raise
    finally:
        if proxy is not None:
            await proxy.stop()
        for fake in started:
            await fake.kill()
    proxy.raise_policy_error()


def completion(tag: str, n: int = 8, stream: bool = True) -> dict:
    return {"model": "tiny", "prompt": tag, "max_tokens": n, "stream": stream, "temperature": 0.0}


def expected_tokens(body: dict) -> list[str]:
    return [token_text(body, i) for i in range(body["max_tokens"])]


def assert_complete(res: StreamResult, body: dict, what: str) -> None:
    assert res.status == 200, f"{what}: expected 200, got {res.status} {res.error or res.body}"
    assert res.error is None, f"{what}: unexpected error {res.error}"
    want = expected_tokens(body)
    assert res.texts == want, (
        f"{what}: every token exactly once and in order.\n want {want}\n got  {res.texts}"
    )
    assert res.done, f"{what}: the stream must end with data: [DONE]"

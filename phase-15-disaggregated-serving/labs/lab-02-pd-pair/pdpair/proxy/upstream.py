"""The upstream side of one client request: ``ProxyContext`` makes the calls the policy asks for.

``post_json`` is the prefill hop (a whole JSON answer), ``open_stream`` the decode hop (status and headers,
the body relayed later). Each call has a timeout and a size bound and raises ``UpstreamError`` on
failure, counted in ``pdproxy_upstream_errors_total`` with the upstream's URL redacted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .config import ProxyConfig
from .metrics import Metrics
from .redact import redact_url


class UpstreamError(Exception):
    """An upstream call failed. ``kind``: unreachable | timeout | http_error | bad_response.

    ``status`` is the HTTP status for http_error (else None); ``body`` the upstream's JSON error when it
    sent one (else None). ``url`` is the upstream as the policy named it; the message shows it redacted.
    """

    def __init__(
        self, role: str, url: str, kind: str, status: int | None = None, body: Any = None, detail: str = ""
    ) -> None:
        self.role, self.url, self.kind, self.status, self.body, self.detail = (
            role,
            url,
            kind,
            status,
            body,
            detail,
        )
        what = f"HTTP {status}" if status is not None else kind
        super().__init__(f"{role} upstream {redact_url(url)}: {what}{': ' + detail if detail else ''}")


@dataclass
class UpstreamStream:
    """An upstream answer whose status and headers have arrived; the body is still to be relayed."""

    role: str
    url: str
    status: int
    content_type: str
    response: aiohttp.ClientResponse = field(repr=False)


class BodyTooLarge(Exception):
    """An upstream body passed its size bound."""


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of ``resp``; BodyTooLarge as soon as it passes ``limit`` bytes (or says it will)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise BodyTooLarge(f"answer of {resp.content_length} bytes exceeds the {limit}-byte bound")
    parts, size = [], 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"answer exceeds the {limit}-byte bound")
        parts.append(chunk)
    return b"".join(parts)


def is_event_stream(content_type: str) -> bool:
    """True for ``text/event-stream`` in any letter case, with or without parameters."""
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


@functools.lru_cache(maxsize=32)
def _timeouts(config_key: tuple[float, float, float]) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
    """The prefill hop's and the decode hop's timeouts, built once per (prefill, decode, connect) setting."""
    prefill_s, decode_s, connect_s = config_key
    return (aiohttp.ClientTimeout(total=prefill_s, sock_connect=connect_s),
            aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=decode_s))  # fmt: skip


class ProxyContext:
    """What the policy may do for one client request: call upstreams (each with a timeout)."""

    def __init__(self, session: aiohttp.ClientSession, config: ProxyConfig, metrics: Metrics) -> None:
        self._session, self.config, self._metrics = session, config, metrics
        self._opened: list[UpstreamStream] = []
        self.hop_ms: dict[str, float] = {}  # role -> duration of its last call (for Server-Timing)
        self._prefill_timeout, self._decode_timeout = _timeouts(
            (config.prefill_timeout_s, config.decode_timeout_s, config.connect_timeout_s)
        )

    @contextlib.contextmanager
    def _timed(self, role: str) -> Iterator[None]:
        """Record how long the block took as this role's hop, whether it succeeded or raised."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.hop_ms[role] = (time.perf_counter() - started) * 1e3

    def _fail(self, role: str, url: str, kind: str, **kw: Any) -> UpstreamError:
        self._metrics.inc("pdproxy_upstream_errors_total", role=role, upstream=redact_url(url), kind=kind)
        return UpstreamError(role, url, kind, **kw)

    async def _error_body(self, resp: aiohttp.ClientResponse) -> Any:
        with contextlib.suppress(Exception):
            raw = await resp.content.read(self.config.max_error_body_bytes)
            return json.loads(raw)
        return None

    async def post_json(
        self, role: str, url: str, path: str, body: dict, headers: dict[str, str] | None = None
    ) -> dict:
        """POST ``body`` to ``url + path`` and return its JSON object answer (the prefill hop).

        Raises UpstreamError: unreachable (connect failed / connection lost), timeout (no complete answer
        within ``prefill_timeout_s``), http_error (status >= 400; ``status`` and ``body`` set),
        bad_response (not a JSON object, e.g. an SSE stream, or larger than ``max_upstream_body_bytes``).
        """
        try:
            with self._timed(role):
                async with self._session.post(
                    url + path, json=body, headers=headers, timeout=self._prefill_timeout
                ) as resp:
                    if resp.status >= 400:
                        err_body = await self._error_body(resp)
                        raise self._fail(role, url, "http_error", status=resp.status, body=err_body)
                    raw = await read_bounded(resp, self.config.max_upstream_body_bytes)
        except TimeoutError:
            raise self._fail(
                role, url, "timeout", detail=f"no answer within {self.config.prefill_timeout_s}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise self._fail(role, url, "unreachable", detail=type(exc).__name__) from None
        except BodyTooLarge as exc:
            raise self._fail(role, url, "bad_response", detail=str(exc)) from None
        try:
            answer = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._fail(role, url, "bad_response", detail="answer is not JSON") from None
        if not isinstance(answer, dict):
            raise self._fail(role, url, "bad_response", detail="answer is not a JSON object")
        return answer

    async def open_stream(
        self, role: str, url: str, path: str, body: dict, headers: dict[str, str] | None = None
    ) -> UpstreamStream:
        """POST ``body`` and return once the answer's status and headers arrive (the decode hop).

        A 4xx answer is returned (the relay passes the client's error through). Raises UpstreamError:
        unreachable, timeout (no headers within ``decode_timeout_s``), http_error (status >= 500).
        """
        try:
            with self._timed(role):
                resp = await self._session.post(
                    url + path, json=body, headers=headers, timeout=self._decode_timeout
                )
        except TimeoutError:
            raise self._fail(
                role, url, "timeout", detail=f"no headers within {self.config.decode_timeout_s}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise self._fail(role, url, "unreachable", detail=type(exc).__name__) from None
        if resp.status >= 500:
            err_body = await self._error_body(resp)
            resp.close()
            raise self._fail(role, url, "http_error", status=resp.status, body=err_body)
        stream = UpstreamStream(role, url, resp.status, resp.headers.get("Content-Type", ""), resp)
        self._opened.append(stream)
        return stream

    def _close_all(self) -> None:
        for s in self._opened:
            s.response.close()

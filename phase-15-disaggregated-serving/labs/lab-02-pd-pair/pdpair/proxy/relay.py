"""Relaying an upstream's answer to the client, with SSE framing kept intact on every path.

- A JSON answer is read whole (bounded by ``max_upstream_body_bytes``) and then forwarded, so a decode
  that dies midway becomes a clean 502.
- An SSE stream is forwarded as it arrives, but only up to the last complete event (an event ends with
  a blank line): a partial event waits for its end in a small buffer and is sent in the same write as
  the bytes that complete it. So the client only ever receives whole events, and if the upstream is cut
  in the middle of one, that partial event is dropped (as an SSE parser drops an unterminated event at
  the end of a stream) and a well-formed ``error`` event follows.
- A stream that ends without ``data: [DONE]`` (decode closed the connection cleanly, without a length,
  or died) gets an ``error`` event and no ``[DONE]``: the proxy never pretends a cut stream finished.
  Counted in ``pdproxy_upstream_errors_total`` as kind ``disconnected`` (the connection broke),
  ``truncated`` (it ended cleanly but early) or ``timeout`` (silent for ``decode_timeout_s``).
- An ``error`` event inside a stream whose 200 was already sent (vLLM's stream generator reports a
  failure that way, e.g. a failed KV load under ``kv_load_failure_policy: fail``, then sends
  ``[DONE]``) reaches the client as it came and is counted in ``pdproxy_upstream_errors_total`` as
  kind ``error_event``: the status alone would call it a success.
- A client that does not accept data for ``client_stall_timeout_s`` is dropped (its upstream closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
from aiohttp import web

from .config import ProxyConfig
from .metrics import Metrics
from .redact import redact_url
from .replies import Relay
from .upstream import BodyTooLarge, is_event_stream, read_bounded

CLIENT_GONE = (ConnectionError, aiohttp.ClientConnectionResetError)
_DONE_TAIL = b"[DONE]"
_DONE_EVENT = b"data: [DONE]\n\n"
# a write of at most this many bytes into an empty transport buffer cannot wait for the client (a
# transport pauses writers only above its high-water mark, 64 KiB by default): no stall deadline is armed
# for it, which saves two timer reschedules per token on the common path
FAST_WRITE_BYTES = 16 * 1024
# where the relay notes the status already sent, for the accounting of a client that leaves mid-stream
SENT_STATUS = web.RequestKey("pd_sent_status", int) if hasattr(web, "RequestKey") else "pd_sent_status"


def json_error(status: int, message: str, type_: str, **extra) -> web.Response:
    """An OpenAI-style error answer: ``{"error": {"message", "type", "code", ...extra}}``."""
    return web.json_response(
        {"error": {"message": redact_url(message), "type": type_, "code": status, **extra}}, status=status
    )


def error_event(message: str, upstream: str) -> bytes:
    """One complete SSE event carrying an OpenAI-style error object (URL redacted)."""
    event = {"error": {"message": redact_url(message), "type": "upstream_error", "code": 502,
                       "upstream": redact_url(upstream)}}  # fmt: skip
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def event_end(buf: bytes) -> int:
    """The index just past the last complete SSE event in ``buf`` (0 when none is complete)."""
    lf = buf.rfind(b"\n\n")
    crlf = buf.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


def count_error_events(chunk: bytes) -> int:
    """How many of the whole SSE events in ``chunk`` carry an OpenAI error object (``data: {"error":``)."""
    if b'"error"' not in chunk:  # the common case: one substring search
        return 0
    found = 0
    for event in chunk.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:"))
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            continue
        found += isinstance(obj, dict) and "error" in obj
    return found


def relay_headers(
    reply: Relay, request_id: str, hop_ms: dict[str, float], client_id: str | None = None
) -> dict[str, str]:
    """``X-Request-Id`` (the client's own, echoed; else the upstream id), ``X-PD-Upstream-Request-Id``
    (the unique id both hops carried), ``X-PD-Mode``, ``X-PD-Decode-Upstream`` (redacted),
    ``Server-Timing`` and the policy's reason: ``X-PD-Fallback-Reason`` for a fallback,
    ``X-PD-Local-Reason`` for a local prefill."""
    headers = {"X-Request-Id": client_id or request_id, "X-PD-Upstream-Request-Id": request_id,
               "X-PD-Mode": reply.mode,
               "X-PD-Decode-Upstream": redact_url(reply.stream.url),
               "Server-Timing": ", ".join(f"{role};dur={ms:.2f}" for role, ms in hop_ms.items())}  # fmt: skip
    if reply.reason and reply.mode == "fallback":
        headers["X-PD-Fallback-Reason"] = reply.reason
    elif reply.reason and reply.mode == "local":
        headers["X-PD-Local-Reason"] = reply.reason
    return headers


async def relay(
    request: web.Request,
    reply: Relay,
    headers: dict[str, str],
    config: ProxyConfig,
    metrics: Metrics,
) -> web.StreamResponse:
    """Send ``reply.stream`` to the client (see the module docstring); returns the response sent."""
    if is_event_stream(reply.stream.content_type):
        return await _relay_sse(request, reply, headers, config, metrics)
    return await _relay_json(reply, headers, config, metrics)


def _upstream_failed(metrics: Metrics, reply: Relay, kind: str) -> None:
    up = reply.stream
    metrics.inc("pdproxy_upstream_errors_total", role=up.role, upstream=redact_url(up.url), kind=kind)


async def _relay_json(
    reply: Relay, headers: dict[str, str], config: ProxyConfig, metrics: Metrics
) -> web.StreamResponse:
    up = reply.stream
    try:
        raw = await read_bounded(up.response, config.max_upstream_body_bytes)
    except (TimeoutError, aiohttp.ClientError, BodyTooLarge) as exc:
        kind = {TimeoutError: "timeout", BodyTooLarge: "bad_response"}.get(type(exc), "disconnected")
        _upstream_failed(metrics, reply, kind)
        return json_error(502, f"{up.role} upstream {up.url} failed mid-answer: {kind}: {exc}",
                          "upstream_error", upstream=redact_url(up.url))  # fmt: skip
    resp = web.Response(body=raw, status=up.status, headers=headers)
    resp.content_type = up.content_type.split(";")[0].strip() or "application/json"
    return resp


async def _relay_sse(
    request: web.Request, reply: Relay, headers: dict[str, str], config: ProxyConfig, metrics: Metrics
) -> web.StreamResponse:
    up = reply.stream
    resp = web.StreamResponse(status=up.status, headers={**headers, "Content-Type": up.content_type,
                                                         "Cache-Control": "no-cache"})  # fmt: skip
    await resp.prepare(request)
    request[SENT_STATUS] = resp.status  # the status the client already has, whatever happens next
    loop = asyncio.get_running_loop()
    transport = request.transport
    stall = config.client_stall_timeout_s
    pending = b""  # the start of an event whose end has not arrived yet
    last = b""  # the last bytes sent (to see whether the stream ended with [DONE])
    failure = None
    finished = False  # [DONE] and the end of the answer have been sent; the upstream is read to its end
    try:
        async with asyncio.timeout(None) as write_deadline:
            async for chunk in up.response.content.iter_any():
                if pending:
                    chunk = pending + chunk
                end = event_end(chunk)
                if end < len(chunk):
                    pending, chunk = chunk[end:], chunk[:end]
                    if len(pending) > config.max_upstream_body_bytes:
                        failure = "bad_response"
                        break
                else:
                    pending = b""
                if chunk and not finished:
                    for _ in range(count_error_events(chunk)):
                        _upstream_failed(metrics, reply, "error_event")
                    # the client may have to accept bytes before this write returns: bound the wait
                    slow = (
                        transport is None
                        or transport.get_write_buffer_size()
                        or len(chunk) > FAST_WRITE_BYTES
                    )
                    if slow:
                        write_deadline.reschedule(loop.time() + stall)
                    if chunk.endswith(_DONE_EVENT):  # the last event: it and the stream's end in one send
                        await resp.write_eof(chunk)
                        finished = True
                    else:
                        await resp.write(chunk)  # whole events, as soon as they are complete
                    if slow:
                        write_deadline.reschedule(None)
                    last = chunk
        if failure is None and (pending or not last.rstrip().endswith(_DONE_TAIL)):
            failure = "truncated"
    except TimeoutError:
        if not write_deadline.expired():  # decode went silent for decode_timeout_s
            failure = "timeout"
        else:  # the client stopped reading
            metrics.inc("pdproxy_client_timeouts_total", phase="write")
            metrics.inc("pdproxy_client_disconnects_total")
            up.response.close()
            if request.transport is not None:
                request.transport.abort()
            return resp
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        failure = "disconnected"
    except CLIENT_GONE:
        metrics.inc("pdproxy_client_disconnects_total")  # the client went away: drop upstream
        up.response.close()
        return resp
    except asyncio.CancelledError:
        metrics.inc("pdproxy_client_disconnects_total")
        up.response.close()
        raise
    if finished:
        return resp
    with contextlib.suppress(*CLIENT_GONE):
        if failure is not None:
            _upstream_failed(metrics, reply, failure)
            await resp.write(error_event(f"{up.role} upstream {up.url} failed mid-stream: {failure}", up.url))
        await resp.write_eof()
    return resp

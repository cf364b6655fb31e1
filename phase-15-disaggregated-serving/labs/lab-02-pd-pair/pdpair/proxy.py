"""The P/D proxy's plumbing (given): an aiohttp server that hands each request to the student's policy.

The student's ``PDProxyPolicy`` (solution.py, task 4) makes the decisions: which upstream, the handoff
flow, and what to do when a side fails. This module does everything else:

- the OpenAI-compatible routes ``POST /v1/completions`` and ``POST /v1/chat/completions`` (malformed or
  non-object JSON -> 400 before the policy sees it), ``GET /health`` and Prometheus-style ``GET /metrics``;
- one ``ProxyContext`` per request with the upstream calls, each with a timeout
  (``post_json`` for the prefill hop, ``open_stream`` for the decode hop), which raise ``UpstreamError``;
- the relay of what the policy returns: an SSE stream is passed through chunk by chunk as it arrives, a
  JSON answer is read whole then forwarded; ``X-Request-Id`` (the client's own, echoed),
  ``X-PD-Upstream-Request-Id`` (the unique id both hops carried: ``upstream_request_id``), ``X-PD-Mode``
  and ``X-PD-Fallback-Reason`` headers tell the client what happened, and ``Server-Timing`` how long
  each hop took (``prefill;dur=`` the whole prefill call, ``decode;dur=`` until decode's headers, in
  ms); a decode that dies mid-stream
  ends the SSE stream with an ``error`` event; a client that disconnects cancels the upstream request (its connection is closed);
- counters: requests, responses by status, handoffs, fallbacks by reason, upstream errors by role,
  upstream and kind, client disconnects, policy errors;
- policy errors: an unexpected exception from the policy is answered with a 500 AND recorded; tests call
  ``raise_policy_error()`` (``ProxyServer`` and ``ProxyThread`` do it on exit) so the student's own
  exception, with its traceback, surfaces in the test instead of a bare 500.

Start it in-process (``async with ProxyServer(policy, config) as proxy``), in a background thread
(``with ProxyThread(policy, config) as proxy``), or as a process::

    python -m pdpair.proxy --prefill http://127.0.0.1:8100 --decode http://127.0.0.1:8200 --port 8000

It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

ROUTES = ("/v1/completions", "/v1/chat/completions")
MODES = ("disaggregated", "fallback", "local")
SSE = "text/event-stream"


class UpstreamError(Exception):
    """An upstream call failed. ``kind``: unreachable | timeout | http_error | bad_response.

    ``status`` is the HTTP status for http_error (else None); ``body`` the upstream's JSON error when it
    sent one (else None).
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
        super().__init__(f"{role} upstream {url}: {what}{': ' + detail if detail else ''}")


@dataclass
class UpstreamStream:
    """An upstream answer whose status and headers have arrived; the body is still to be relayed."""

    role: str
    url: str
    status: int
    content_type: str
    response: aiohttp.ClientResponse = field(repr=False)


@dataclass
class Relay:
    """Policy answer: relay ``stream`` to the client. ``mode``: "disaggregated" (prefill then decode),
    "fallback" (prefill failed or absent: decode alone) or "local" (decode alone by choice: a short
    prompt). ``reason``: why decode served alone (an UpstreamError kind, "short_prompt"); None when
    disaggregated."""

    stream: UpstreamStream
    mode: str
    reason: str | None = None
    prefill_url: str | None = None


@dataclass
class ErrorReply:
    """Policy answer: reply with this status and JSON body (OpenAI style: {"error": {...}})."""

    status: int
    body: dict[str, Any]


class Policy(Protocol):
    async def handle(
        self, ctx: ProxyContext, path: str, body: dict, request_id: str
    ) -> Relay | ErrorReply: ...


@dataclass
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    connect_timeout_s: float = 2.0  # TCP connect, both sides
    prefill_timeout_s: float = 30.0  # the whole prefill call
    decode_timeout_s: float = 60.0  # until decode's headers, and the longest silence between chunks
    max_error_body_bytes: int = 64 * 1024


# ------------------------------------------------------------------------------------------------ metrics

METRIC_HELP = {
    "pdproxy_requests_total": ("counter", "Client requests received, by endpoint."),
    "pdproxy_responses_total": ("counter", "Responses sent to clients, by HTTP status."),
    "pdproxy_handoffs_total": ("counter", "Requests served disaggregated (prefill then decode)."),
    "pdproxy_fallbacks_total": (
        "counter",
        "Requests sent to decode alone (decode prefilled locally), by reason.",
    ),
    "pdproxy_local_prefills_total": ("counter", "Requests sent to decode alone by choice (short prompts)."),
    "pdproxy_upstream_errors_total": ("counter", "Failed upstream calls, by role, upstream and kind."),
    "pdproxy_client_disconnects_total": ("counter", "Clients that went away before their answer ended."),
    "pdproxy_policy_errors_total": ("counter", "Unexpected exceptions raised by the proxy policy."),
    "pdproxy_inflight_requests": ("gauge", "Requests being served now."),
}
ALWAYS_SHOWN = ("pdproxy_handoffs_total", "pdproxy_client_disconnects_total", "pdproxy_policy_errors_total",
                "pdproxy_inflight_requests")  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters in Prometheus text exposition format (version 0.0.4)."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        if name not in METRIC_HELP:
            raise KeyError(f"unknown metric {name}")
        self._values[(name, tuple(sorted((k, str(v)) for k, v in labels.items())))] += value

    def value(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        want = {k: str(v) for k, v in labels.items()}
        return sum(
            v for (n, lab), v in self._values.items() if n == name and want.items() <= dict(lab).items()
        )

    def render(self) -> str:
        lines = []
        for name, (kind, help_text) in METRIC_HELP.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            samples = sorted((lab, v) for (n, lab), v in self._values.items() if n == name)
            if not samples and name in ALWAYS_SHOWN:
                samples = [((), 0.0)]
            for lab, v in samples:
                labels = ",".join(f'{k}="{_escape(val)}"' for k, val in lab)
                lines.append(f"{name}{{{labels}}} {v:g}" if labels else f"{name} {v:g}")
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ the context


class ProxyContext:
    """What the policy may do for one client request: call upstreams (each with a timeout)."""

    def __init__(self, session: aiohttp.ClientSession, config: ProxyConfig, metrics: Metrics) -> None:
        self._session, self.config, self._metrics = session, config, metrics
        self._opened: list[UpstreamStream] = []
        self.hop_ms: dict[str, float] = {}  # role -> duration of its last call (for Server-Timing)

    @contextlib.contextmanager
    def _timed(self, role: str) -> Iterator[None]:
        """Record how long the block took as this role's hop, whether it succeeded or raised."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.hop_ms[role] = (time.perf_counter() - started) * 1e3

    def _fail(self, role: str, url: str, kind: str, **kw: Any) -> UpstreamError:
        self._metrics.inc("pdproxy_upstream_errors_total", role=role, upstream=url, kind=kind)
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
        bad_response (not a JSON object, e.g. an SSE stream).
        """
        timeout = aiohttp.ClientTimeout(
            total=self.config.prefill_timeout_s, sock_connect=self.config.connect_timeout_s
        )
        try:
            with self._timed(role):
                async with self._session.post(
                    url + path, json=body, headers=headers, timeout=timeout
                ) as resp:
                    if resp.status >= 400:
                        err_body = await self._error_body(resp)
                        raise self._fail(role, url, "http_error", status=resp.status, body=err_body)
                    raw = await resp.read()
        except TimeoutError:
            raise self._fail(
                role, url, "timeout", detail=f"no answer within {self.config.prefill_timeout_s}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise self._fail(role, url, "unreachable", detail=type(exc).__name__) from None
        try:
            answer = json.loads(raw)
        except ValueError:
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
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.config.connect_timeout_s, sock_read=self.config.decode_timeout_s
        )
        try:
            with self._timed(role):
                resp = await self._session.post(url + path, json=body, headers=headers, timeout=timeout)
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


# ----------------------------------------------------------------------------------------------- server


def upstream_request_id(client_id: str | None) -> str:
    """The id both hops of one request carry upstream (``X-Request-Id``): unique per request.

    Never the client's header alone: two clients may send the same ``X-Request-Id`` at once, and vLLM
    keys state by it (0.32 ``v1/engine/output_processor.py`` ``abort_requests``: aborting an external id
    aborts every request that used it; ``v1/engine/input_processor.py`` ``assign_request_id`` warns that
    duplicate ids "may cause failures" when its randomisation is off). A short, plain client id
    (``[A-Za-z0-9_.:-]``, up to 64 chars) is kept as a prefix so upstream logs can be traced back to it;
    the client gets its own id back in ``X-Request-Id`` and this one in ``X-PD-Upstream-Request-Id``.
    Example: ``"client-7"`` -> ``"client-7-3f9c0a1b2c4d5e6f"``; None -> ``"3f9c0a1b2c4d5e6f..."`` (32 hex).
    """
    suffix = uuid.uuid4().hex
    if (
        client_id
        and len(client_id) <= 64
        and all(c.isascii() and (c.isalnum() or c in "_.:-") for c in client_id)
    ):
        return f"{client_id}-{suffix[:16]}"
    return suffix


def _json_error(status: int, message: str, type_: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "code": status, **extra}}, status=status
    )


class ProxyServer:
    """The proxy in the current event loop. ``async with ProxyServer(policy, cfg) as p: p.url``."""

    def __init__(
        self, policy: Policy, config: ProxyConfig | None = None, *, upstreams: dict | None = None
    ) -> None:
        self.policy = policy
        self.config = config or ProxyConfig()
        self.metrics = Metrics()
        self.policy_errors: list[BaseException] = []
        self.upstreams = upstreams or {}  # shown by /health
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def build_app(self) -> web.Application:
        app = web.Application()
        for route in ROUTES:
            app.router.add_post(route, self._completions)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False), auto_decompress=False
        )
        # handler_cancellation: a client that disconnects cancels its handler, which closes the upstream
        self._runner = web.AppRunner(
            self.build_app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.stop()
        if exc_type is None:
            self.raise_policy_error()

    def raise_policy_error(self) -> None:
        """Re-raise the first exception the policy raised while serving (with its own traceback)."""
        if self.policy_errors:
            raise self.policy_errors[0]

    # -- routes ------------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self.upstreams})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")

    def _respond(self, resp: web.StreamResponse) -> web.StreamResponse:
        self.metrics.inc("pdproxy_responses_total", status=str(resp.status))
        return resp

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self.metrics.inc("pdproxy_requests_total", endpoint=request.path)
        try:
            body = await request.json()
        except ValueError as exc:
            return self._respond(_json_error(400, f"malformed JSON body: {exc}", "invalid_request_error"))
        if not isinstance(body, dict):
            return self._respond(_json_error(400, "the body must be a JSON object", "invalid_request_error"))
        client_id = request.headers.get("X-Request-Id")
        request_id = upstream_request_id(client_id)
        assert self._session is not None
        ctx = ProxyContext(self._session, self.config, self.metrics)
        self.metrics.inc("pdproxy_inflight_requests")
        try:
            try:
                reply = await self.policy.handle(ctx, request.path, body, request_id)
            except UpstreamError as exc:  # the policy let an upstream failure escape
                return self._respond(_json_error(502, str(exc), "upstream_error", upstream=exc.url))
            except asyncio.CancelledError:
                self.metrics.inc("pdproxy_client_disconnects_total")
                raise
            except Exception as exc:  # noqa: BLE001 - recorded and re-raised in the test process
                return self._policy_failed(exc)
            if isinstance(reply, ErrorReply):
                return self._respond(web.json_response(reply.body, status=reply.status))
            if not isinstance(reply, Relay) or reply.mode not in MODES:
                return self._policy_failed(
                    TypeError(f"the policy must return Relay(mode in {MODES}) or ErrorReply, got {reply!r}")
                )
            if reply.mode == "disaggregated":
                self.metrics.inc("pdproxy_handoffs_total")
            elif reply.mode == "local":
                self.metrics.inc("pdproxy_local_prefills_total")
            else:
                self.metrics.inc("pdproxy_fallbacks_total", reason=reply.reason or "unspecified")
            return await self._relay(request, reply, request_id, ctx.hop_ms, client_id)
        finally:
            ctx._close_all()
            self.metrics.inc("pdproxy_inflight_requests", -1)

    def _policy_failed(self, exc: BaseException) -> web.Response:
        self.policy_errors.append(exc)
        self.metrics.inc("pdproxy_policy_errors_total")
        return self._respond(_json_error(500, f"proxy policy error: {exc!r}", "proxy_policy_error"))

    async def _relay(
        self,
        request: web.Request,
        reply: Relay,
        request_id: str,
        hop_ms: dict[str, float],
        client_id: str | None = None,
    ) -> web.StreamResponse:
        up = reply.stream
        headers = {"X-Request-Id": client_id or request_id, "X-PD-Upstream-Request-Id": request_id,
                   "X-PD-Mode": reply.mode, "X-PD-Decode-Upstream": up.url,
                   "Server-Timing": ", ".join(f"{role};dur={ms:.2f}" for role, ms in hop_ms.items())}  # fmt: skip
        if reply.reason and reply.mode == "fallback":
            headers["X-PD-Fallback-Reason"] = reply.reason
        if not up.content_type.startswith(SSE):
            # a JSON answer: read it whole first, so a decode that dies midway becomes a clean 502
            try:
                raw = await up.response.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "disconnected"
                self.metrics.inc("pdproxy_upstream_errors_total", role=up.role, upstream=up.url, kind=kind)
                return self._respond(_json_error(502, f"{up.role} upstream {up.url} failed mid-answer: {kind}",
                                                 "upstream_error", upstream=up.url))  # fmt: skip
            resp = web.Response(body=raw, status=up.status, headers=headers)
            resp.content_type = up.content_type.split(";")[0] or "application/json"
            return self._respond(resp)

        resp = web.StreamResponse(status=up.status, headers={**headers, "Content-Type": up.content_type,
                                                             "Cache-Control": "no-cache"})  # fmt: skip
        await resp.prepare(request)
        self._respond(resp)
        try:
            async for chunk in up.response.content.iter_any():
                await resp.write(chunk)  # each chunk leaves as soon as it arrived
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else "disconnected"
            self.metrics.inc("pdproxy_upstream_errors_total", role=up.role, upstream=up.url, kind=kind)
            event = {"error": {"message": f"{up.role} upstream {up.url} failed mid-stream: {kind}",
                               "type": "upstream_error", "code": 502, "upstream": up.url}}  # fmt: skip
            with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
                await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            self.metrics.inc("pdproxy_client_disconnects_total")  # the client went away: drop upstream
            up.response.close()
            return resp
        except asyncio.CancelledError:
            self.metrics.inc("pdproxy_client_disconnects_total")
            up.response.close()
            raise
        with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
            await resp.write_eof()
        return resp


class ProxyThread:
    """The proxy on its own event loop in a background thread (for sync callers: scripts, pair runners).

    Build the policy in the calling thread, then ``with ProxyThread(policy, cfg) as p: ... p.url``.
    On exit the server stops and the policy's first exception, if any, is re-raised here.
    """

    def __init__(
        self, policy: Policy, config: ProxyConfig | None = None, start_timeout_s: float = 10.0
    ) -> None:
        self.server = ProxyServer(policy, config)
        self._start_timeout_s = start_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pdpair-proxy", daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def metrics(self) -> Metrics:
        return self.server.metrics

    def __enter__(self) -> ProxyThread:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self.server.start(), self._loop)
        try:
            fut.result(self._start_timeout_s)
        except BaseException:
            self._shutdown()
            raise
        return self

    def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __exit__(self, exc_type, exc, tb) -> None:
        self._shutdown()
        if exc_type is None:
            self.server.raise_policy_error()


# -------------------------------------------------------------------------------------------------- CLI

LAB_DIR = Path(__file__).resolve().parent.parent


def load_impl(value: str | None = None):
    """The student's module: ``solution`` | ``starter`` (this lab's file) | a path (default: $LAB_IMPL).

    The same resolution and loading as the tests' ``impl`` fixture (labkit.impl), so a CLI and pytest
    in one process share one module object.
    """
    from labkit import impl as labimpl

    try:
        return labimpl.load_module(labimpl.impl_path_for(LAB_DIR, value or labimpl.lab_impl_setting()))
    except labimpl.LabImplError as exc:
        raise SystemExit(str(exc)) from None


async def _serve(policy: Policy, config: ProxyConfig, upstreams: dict) -> None:
    server = ProxyServer(policy, config, upstreams=upstreams)
    await server.start()
    print(f"pdpair proxy listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
    for exc in server.policy_errors[:1]:
        print(f"policy error: {exc!r}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdpair.proxy", description="lab-02 P/D proxy")
    parser.add_argument("--prefill", action="append", default=[], help="prefill upstream URL (repeatable)")
    parser.add_argument("--decode", action="append", required=True, help="decode upstream URL (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 = a free port (printed on stdout)")
    parser.add_argument(
        "--impl", default=None, help="solution | starter | path (default: $LAB_IMPL or solution)"
    )
    parser.add_argument("--connect-timeout", type=float, default=ProxyConfig.connect_timeout_s)
    parser.add_argument("--prefill-timeout", type=float, default=ProxyConfig.prefill_timeout_s)
    parser.add_argument("--decode-timeout", type=float, default=ProxyConfig.decode_timeout_s)
    args = parser.parse_args(argv)
    strip = [u.rstrip("/") for u in args.prefill], [u.rstrip("/") for u in args.decode]
    impl = load_impl(args.impl)
    policy = impl.PDProxyPolicy(*strip)
    config = ProxyConfig(host=args.host, port=args.port, connect_timeout_s=args.connect_timeout,
                         prefill_timeout_s=args.prefill_timeout, decode_timeout_s=args.decode_timeout)  # fmt: skip
    asyncio.run(_serve(policy, config, {"prefill": strip[0], "decode": strip[1]}))
    return 0


if __name__ == "__main__":
    # run the copy imported as `pdpair.proxy`: the policy's Relay/ErrorReply come from that module,
    # and `python -m` would otherwise have two of each class (__main__'s and pdpair.proxy's)
    from pdpair.proxy import main as _main

    sys.exit(_main())

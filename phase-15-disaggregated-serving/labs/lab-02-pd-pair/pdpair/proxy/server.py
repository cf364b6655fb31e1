"""The proxy's server: routes, request limits, per-connection timeouts and request accounting.

Routes: ``POST /v1/completions`` and ``POST /v1/chat/completions`` (the policy's), ``GET /health`` and
``GET /metrics``. Before the policy sees a request body the server has:

- read it within ``body_timeout_s`` (else 408, connection closed) and at most ``max_body_bytes`` (413);
- decoded it with its declared charset (unknown charset -> 415; undecodable -> 400);
- parsed it as a JSON object (malformed, not an object, or nested deeper than ``max_json_depth`` -> 400).

Connections: a new connection must complete its request headers within ``header_timeout_s``, a
kept-alive one is closed after ``idle_timeout_s`` without a request, and at most ``max_connections``
are open (the longest-idle one is evicted for a newcomer; when all are busy the newcomer is closed).
Every closure for slowness is counted in ``pdproxy_client_timeouts_total`` by phase. Defaults and what
they are sized for: ``pdpair.proxy.config``.

An unexpected exception from the policy is answered with a 500 and kept (bounded: see
``ProxyConfig.max_policy_errors_kept``) so tests can re-raise the student's own exception with
``raise_policy_error()``; any other unexpected exception is a 500 without a traceback in the answer.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .config import ProxyConfig
from .metrics import Metrics
from .redact import redact_url, scrub
from .relay import SENT_STATUS, json_error, relay, relay_headers
from .replies import MODES, ErrorReply, Policy, Relay
from .upstream import ProxyContext, UpstreamError

ROUTES = ("/v1/completions", "/v1/chat/completions")
# after a 408/413 the rest of the body is drained this long (so the client can read the error), not 10 s
LINGER_S = 1.0


class BadRequestBody(Exception):
    """The client body cannot be handed to the policy: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True if ``value`` nests containers (dicts/lists) more than ``limit`` levels deep.

    Example: ``json_depth_exceeds([[1]], 1)`` is True, ``json_depth_exceeds([[1]], 2)`` False.
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def parse_body(raw: bytes, charset: str | None, max_depth: int) -> dict:
    """The client's JSON object from the raw body; BadRequestBody (415 or 400) when it is not one."""
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            raise BadRequestBody(415, f"unsupported charset {charset!r} (send UTF-8 JSON)") from None
        try:
            text: str | bytes = raw.decode(charset)
        except UnicodeDecodeError as exc:
            raise BadRequestBody(400, f"body is not valid {charset}: {exc}") from None
    else:
        text = raw  # json.loads detects UTF-8/16/32 (RFC 8259)
    # a body with few brackets cannot be deep: skip the walk for the common case (one C-speed count)
    shallow = raw.count(b"[") + raw.count(b"{") <= max_depth
    try:
        body = json.loads(text)
    except RecursionError:
        raise BadRequestBody(400, f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise BadRequestBody(400, f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestBody(400, "the body must be a JSON object")
    if not shallow and json_depth_exceeds(body, max_depth):
        raise BadRequestBody(400, f"JSON nested deeper than {max_depth} levels")
    return body


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
    suffix = os.urandom(16).hex()  # 128 random bits, as uuid4 has (122), without building a UUID
    if (
        client_id
        and len(client_id) <= 64
        and all(c.isascii() and (c.isalnum() or c in "_.:-") for c in client_id)
    ):
        return f"{client_id}-{suffix[:16]}"
    return suffix


@dataclass
class _Conn:
    """What the server tracks of one client connection."""

    idle_since: float  # loop time it opened or last finished a request
    busy: int = 0  # requests being handled on it now
    served: int = 0  # requests finished on it


class ProxyServer:
    """The proxy in the current event loop. ``async with ProxyServer(policy, cfg) as p: p.url``."""

    def __init__(
        self, policy: Policy, config: ProxyConfig | None = None, *, upstreams: dict | None = None
    ) -> None:
        self.policy = policy
        self.config = config or ProxyConfig()
        self.metrics = Metrics()
        # bounded: the first exception keeps its traceback (re-raised in tests), later ones do not
        self.policy_errors: list[BaseException] = []
        self.upstreams = upstreams or {}  # shown by /health (redacted)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._conns: dict[Any, _Conn] = {}
        self._sweeper: asyncio.Task | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._account])
        for route in ROUTES:
            app.router.add_post(route, self._completions)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> str:
        # connections to upstreams are kept alive and reused; no cookie jar: an upstream's cookie must
        # never be stored and sent on with another client's request
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # handler_cancellation: a client that disconnects cancels its handler, which closes the upstream.
        # aiohttp's own keep-alive timer is set past ours: the sweeper below owns idle connections.
        self._runner = web.AppRunner(
            self.build_app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None,
            keepalive_timeout=self.config.idle_timeout_s + 5.0, lingering_time=LINGER_S,
        )  # fmt: skip
        await self._runner.setup()
        self._watch_connections(self._runner.server)
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return self.url

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
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

    # -- connections -------------------------------------------------------------------------------

    def _watch_connections(self, server: web.Server) -> None:
        """Track every client connection (aiohttp's server calls these two on open and close)."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._admit(handler)

        def connection_lost(handler: Any, exc: BaseException | None) -> None:
            if self._conns.pop(handler, None) is not None:
                self.metrics.inc("pdproxy_open_connections", -1)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def _admit(self, handler: Any) -> None:
        now = asyncio.get_running_loop().time()
        if len(self._conns) >= self.config.max_connections:
            idle = [(c.idle_since, id(h), h) for h, c in self._conns.items() if not c.busy]
            self.metrics.inc("pdproxy_connections_refused_total")
            if not idle:
                handler.force_close()  # every slot is serving a request: the newcomer waits elsewhere
                return
            victim = min(idle)[2]
            self._conns.pop(victim)
            self.metrics.inc("pdproxy_open_connections", -1)
            victim.force_close()
        self._conns[handler] = _Conn(idle_since=now)
        self.metrics.inc("pdproxy_open_connections")

    async def _sweep(self) -> None:
        """Close connections idle past their timeout (no complete request in time)."""
        cfg = self.config
        tick = max(0.05, min(cfg.header_timeout_s, cfg.idle_timeout_s, 2.0) / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for handler, conn in list(self._conns.items()):
                if conn.busy:
                    continue
                phase, limit = (
                    ("idle", cfg.idle_timeout_s) if conn.served else ("header", cfg.header_timeout_s)
                )
                if now - conn.idle_since > limit:
                    self.metrics.inc("pdproxy_client_timeouts_total", phase=phase)
                    handler.force_close()

    # -- accounting --------------------------------------------------------------------------------

    @web.middleware
    async def _account(self, request: web.Request, handler) -> web.StreamResponse:
        """Mark the connection busy while any request runs on it (the sweeper leaves it alone), and
        count every completion request once in, once out (see ``pdpair.proxy.metrics``)."""
        conn = self._conns.get(request.protocol)
        if conn is not None:
            conn.busy += 1
        try:
            if request.path not in ROUTES:
                return await handler(request)
            return await self._counted(request, handler)
        finally:
            if conn is not None:
                conn.busy -= 1
                conn.served += 1
                conn.idle_since = asyncio.get_running_loop().time()

    async def _counted(self, request: web.Request, handler) -> web.StreamResponse:
        self.metrics.inc("pdproxy_requests_total", endpoint=request.path)
        self.metrics.inc("pdproxy_inflight_requests")
        status = "499"  # the client closed the connection before any answer
        try:
            resp = await handler(request)
            status = str(resp.status)
            return resp
        except web.HTTPException as exc:
            status = str(exc.status)
            raise
        except asyncio.CancelledError:
            status = str(request.get(SENT_STATUS, 499))
            raise
        except Exception as exc:  # noqa: BLE001 - a bug outside the policy: a 500, no traceback shown
            self.metrics.inc("pdproxy_internal_errors_total")
            status = "500"
            return json_error(500, f"internal proxy error ({type(exc).__name__})", "internal_error")
        finally:
            self.metrics.inc("pdproxy_inflight_requests", -1)
            self.metrics.inc("pdproxy_responses_total", status=status)

    # -- routes ------------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **scrub(self.upstreams)})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _read_body(self, request: web.Request) -> dict:
        cfg = self.config
        if request.content_length is not None and request.content_length > cfg.max_body_bytes:
            raise BadRequestBody(413, self._too_large(request.content_length))
        try:
            async with asyncio.timeout(cfg.body_timeout_s):
                raw = await request.read()
        except TimeoutError:
            self.metrics.inc("pdproxy_client_timeouts_total", phase="body")
            raise BadRequestBody(408, f"the body did not arrive within {cfg.body_timeout_s}s") from None
        except web.HTTPRequestEntityTooLarge:
            raise BadRequestBody(413, self._too_large(f"more than {cfg.max_body_bytes}")) from None
        return parse_body(raw, request.charset, cfg.max_json_depth)

    def _too_large(self, size: Any) -> str:
        return (f"request body of {size} bytes exceeds max_body_bytes={self.config.max_body_bytes} "
                "(python -m pdpair.proxy --max-body-bytes N; size it with body_limit_for(max_model_len))")  # fmt: skip

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._read_body(request)
        except BadRequestBody as exc:
            resp = json_error(exc.status, str(exc), "invalid_request_error")
            if exc.status in (408, 413):
                resp.force_close()  # the rest of the body is not worth reading
            return resp
        client_id = request.headers.get("X-Request-Id")
        request_id = upstream_request_id(client_id)
        assert self._session is not None
        ctx = ProxyContext(self._session, self.config, self.metrics)
        try:
            try:
                reply = await self.policy.handle(ctx, request.path, body, request_id)
            except UpstreamError as exc:  # the policy let an upstream failure escape
                return json_error(502, str(exc), "upstream_error", upstream=redact_url(exc.url))
            except asyncio.CancelledError:
                self.metrics.inc("pdproxy_client_disconnects_total")
                raise
            except Exception as exc:  # noqa: BLE001 - recorded and re-raised in the test process
                return self._policy_failed(exc)
            if isinstance(reply, ErrorReply):
                if not isinstance(reply.status, int) or not 400 <= reply.status <= 599:
                    return self._policy_failed(
                        TypeError(
                            f"ErrorReply.status must be an HTTP error status 400..599, got {reply.status!r}"
                        )
                    )
                return web.json_response(scrub(reply.body), status=reply.status)
            if not isinstance(reply, Relay) or reply.mode not in MODES:
                return self._policy_failed(
                    TypeError(f"the policy must return Relay(mode in {MODES}) or ErrorReply, got {reply!r}")
                )
            if reply.mode == "disaggregated":
                self.metrics.inc("pdproxy_handoffs_total")
            elif reply.mode == "local":
                self.metrics.inc("pdproxy_local_prefills_total", reason=reply.reason or "unspecified")
            else:
                self.metrics.inc("pdproxy_fallbacks_total", reason=reply.reason or "unspecified")
            headers = relay_headers(reply, request_id, ctx.hop_ms, client_id)
            return await relay(request, reply, headers, self.config, self.metrics)
        finally:
            ctx._close_all()

    def _policy_failed(self, exc: BaseException) -> web.Response:
        kept = self.policy_errors
        if kept:
            exc.__traceback__ = None  # only the first keeps its frames (and the bodies they hold)
        if len(kept) < self.config.max_policy_errors_kept:
            kept.append(exc)
        self.metrics.inc("pdproxy_policy_errors_total")
        return json_error(500, f"proxy policy error: {exc!r}", "proxy_policy_error")


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

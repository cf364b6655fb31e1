"""Small vLLM-like upstreams that speak the P/D protocol, for tests, drills and the benchmark.

``FakePrefill`` answers like a vLLM ``kv_producer``: a non-streaming completion of one token whose JSON
carries ``kv_transfer_params`` (``do_remote_prefill: true``, ``remote_engine_id``, ``remote_block_ids``,
``remote_request_id``, ``remote_host``, ``remote_port``, ``tp_size``, ``remote_num_tokens``,
``transfer_mode: "pull"``), and then holds the prompt's blocks until a decode reads them or its lease
expires (``held_requests()``). Asked to stream (which a real prefill would do, without the params) it
streams one token and no params.

``FakeDecode`` answers like a ``kv_consumer``, including vLLM 0.32's reactions to ``kv_transfer_params``
(a failed KV load under either ``kv_load_failure_policy``, the inputs that kill its engine core, a
request parked for ever) and decode's own counters at ``GET /metrics`` under vLLM's metric names (see
``FakeDecode`` and ``DecodeCounters``); with ``require_kv_params`` it refuses requests that carry none
(400); ``connector=False`` is a decode launched without a KV connector. It then streams ``max_tokens``
tokens (SSE, or one JSON answer) whose text is unique per request and position, with ``ttft_s`` before
the first and ``itl_s`` between the others.

Both validate the body as vLLM's pydantic models do, for the fields they read: a body that is not a
JSON object, or ``max_tokens``/``max_completion_tokens`` that is not an integer >= 1, gets vLLM's 400
(``{"error": {"message", "type": "Bad Request", "param", "code": 400}}``, vLLM 0.32
``entrypoints/serve/exception_handling/handlers/validation.py``), never a 500.

Both record every request (``.requests``: path, body, headers, received params) and both can be told
to misbehave (``behaviour``): ``ok``, ``error500``, ``error400``, ``hang`` (never answer), ``die``
(drop the connection without an answer), ``die_mid_stream`` (decode: drop it after ``die_after``
tokens), ``cut_mid_event`` (decode: after ``die_after`` tokens send half an event, then drop the
connection), ``end_early`` (decode: an answer without a length or chunking, ``Connection: close``,
that ends cleanly after ``die_after`` tokens and half an event, with no ``[DONE]``), ``error_event``
(decode: after ``die_after`` tokens an OpenAI error object as an event, then ``[DONE]``, as vLLM's
stream generator does when generation fails); ``stop()`` refuses connections (the port is closed) and
``kill()`` also cuts open ones. ``pad_bytes`` (decode) adds that many bytes to every streamed event, to
fill a slow client's buffers quickly. ``FakeDecode.cancelled`` holds the request ids whose client (the
proxy) went away mid-answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BEHAVIOURS = (
    "ok",
    "error500",
    "error400",
    "hang",
    "die",
    "die_mid_stream",
    "cut_mid_event",
    "end_early",
    "error_event",
)


class InvalidBody(ValueError):
    """The body fails vLLM's request validation (answered 400). ``param``: the offending field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def bad_request(exc: InvalidBody) -> web.Response:
    """vLLM's answer to a request that fails validation (a 400, never a 500)."""
    error = {"message": str(exc), "type": "Bad Request", "param": exc.param, "code": 400}
    return web.json_response({"error": error}, status=400)


@dataclass
class Seen:
    path: str
    body: dict[str, Any]
    headers: Mapping[str, str]  # case-insensitive
    request_id: str | None
    at: float = field(default_factory=time.monotonic)
    kv_transfer_params: Any = None  # the params the engine would see (decode: after vllm_xargs)
    outcome: str = "pending"  # pending | answered | failed | cancelled
    admitted: bool = False  # decode: the request reached the engine (see FakeDecode.admit_delay_s)


def prompt_tag(body: dict[str, Any]) -> str:
    """A short tag identifying a request's prompt (completions ``prompt`` or the last chat message)."""
    if "messages" in body:
        msgs = body.get("messages") or [{}]
        prompt = msgs[-1].get("content", "") if isinstance(msgs[-1], dict) else ""
    else:
        prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = ",".join(map(str, prompt))
    return str(prompt)[:40]


def token_text(body: dict[str, Any], i: int) -> str:
    """The text of output token ``i`` for this request: unique per (prompt, position)."""
    return f"<{prompt_tag(body)}#{i}>"


def requested_tokens(body: dict[str, Any]) -> int:
    """How many tokens the request asks for (16 when it does not say, vLLM's default).

    Accepts what pydantic's lax int does: an int, or a string holding one (``"5"``). InvalidBody for
    anything else (``"abc"``, 2.5, true, a list) and for values below 1.
    """
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidBody(key, f"1 validation error:\n  body.{key}: Input should be a valid integer")
        if value < 1:
            raise InvalidBody(key, f"{key} must be at least 1, got {value}")
        return value
    return 16


class FakeUpstream:
    role = "upstream"

    def __init__(self, behaviour: str = "ok", host: str = "127.0.0.1", port: int = 0) -> None:
        self.behaviour = behaviour
        self.host, self._port = host, port
        self.requests: list[Seen] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._transports: set[Any] = set()
        self.port: int | None = None

    @property
    def behaviour(self) -> str:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: str) -> None:
        if value not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {value!r}")
        self._behaviour = value

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # vLLM takes long token-id prompts
        app.router.add_post("/v1/completions", self._entry)
        app.router.add_post("/v1/chat/completions", self._entry)
        app.router.add_get("/health", self._health)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(
            self._app(), handler_cancellation=True, shutdown_timeout=0.2, access_log=None
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port or self.port or 0)
        await self._site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        """Stop listening (new connections are refused) and shut down."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def kill(self) -> None:
        """Die abruptly: cut every open connection, then stop listening."""
        for tr in list(self._transports):
            tr.abort()
        await self.stop()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.kill()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        tr = request.transport
        if tr is not None:
            self._transports.add(tr)
        try:
            try:
                body = json.loads(await request.read())
                if not isinstance(body, dict):
                    raise InvalidBody(
                        "body", "1 validation error:\n  body: Input should be a valid dictionary"
                    )
                requested_tokens(body)
            except (ValueError, RecursionError) as exc:
                why = (
                    exc if isinstance(exc, InvalidBody) else InvalidBody("body", f"JSON decode error: {exc}")
                )
                return bad_request(why)
            seen = Seen(request.path, body, request.headers.copy(), request.headers.get("X-Request-Id"))
            seen.kv_transfer_params = body.get("kv_transfer_params")
            self.requests.append(seen)
            try:
                resp = await self._misbehave(request, seen)
                if resp is None:
                    resp = await self._answer(request, body, seen)
            except asyncio.CancelledError:
                seen.outcome = "cancelled"
                self._on_cancel(seen)
                raise
            if seen.outcome == "pending":
                seen.outcome = "answered" if resp.status < 400 else "failed"
            return resp
        finally:
            self._transports.discard(tr)

    def _on_cancel(self, seen: Seen) -> None:
        pass

    async def _misbehave(self, request: web.Request, seen: Seen) -> web.StreamResponse | None:
        if self.behaviour == "error500":
            return web.json_response(
                {"error": {"message": f"fake {self.role}: injected 500", "code": 500}}, status=500
            )
        if self.behaviour == "error400":
            msg = f"fake {self.role}: injected 400 (e.g. prompt longer than max_model_len)"
            return web.json_response({"error": {"message": msg, "code": 400}}, status=400)
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        if self.behaviour == "die":
            seen.outcome = "failed"
            request.transport.abort()
            return web.Response(status=500)  # never delivered: the connection is gone
        return None

    async def _answer(self, request: web.Request, body: dict, seen: Seen) -> web.StreamResponse:
        raise NotImplementedError


class FakePrefill(FakeUpstream):
    """A vLLM prefill instance (``kv_producer``) as the proxy sees it. ``delay_s``: compute time.

    Like vLLM 0.32 it HOLDS the prompt's blocks after answering with ``kv_transfer_params``
    (``held``: remote request id -> lease expiry, ``lease_s`` = ``kv_lease_duration``, 30 s by default)
    until a decode reads them or aborts its request after receiving it (``release``), or the lease
    runs out (nixl/pull_scheduler.py ``request_finished``; pull_worker.py frees on decode's notification).
    A request whose client leaves before the answer is aborted and holds nothing (status not finished:
    freed at once, pull_scheduler.py ``_reqs_not_processed``).
    """

    role = "prefill"

    def __init__(
        self, behaviour: str = "ok", delay_s: float = 0.0, engine_id: str | None = None,
        issue_params: bool = True, lease_s: float = 30.0, **kw: Any,
    ) -> None:  # fmt: skip
        super().__init__(behaviour, **kw)
        self.delay_s = delay_s
        self.issue_params = issue_params  # False: a prefill launched without a KV connector
        self.engine_id = engine_id or f"prefill-{uuid.uuid4().hex[:8]}"
        self.issued: dict[str, dict[str, Any]] = {}  # remote_request_id -> kv_transfer_params handed out
        self.lease_s = lease_s
        self.held: dict[str, float] = {}  # remote_request_id -> monotonic time its lease expires
        self.released: list[str] = []  # remote request ids freed by a decode, in order
        self._next_block = 0

    def held_requests(self) -> list[str]:
        """Remote request ids whose blocks are still held (not read, not aborted, lease not expired)."""
        now = time.monotonic()
        return [rid for rid, expiry in self.held.items() if expiry > now]

    def release(self, remote_request_id: str) -> None:
        """A decode read (or aborted after receiving) the request: its blocks are freed."""
        if self.held.pop(remote_request_id, None) is not None:
            self.released.append(remote_request_id)

    async def _answer(self, request: web.Request, body: dict, seen: Seen) -> web.StreamResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        rid = seen.request_id or f"anon-{uuid.uuid4().hex[:8]}"
        chat = request.path.endswith("chat/completions")
        first = token_text(body, 0)
        if body.get("stream"):  # what vLLM does when asked to stream: no kv_transfer_params come back
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(f"data: {json.dumps(_chunk(rid, chat, first, 0, 'length'))}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            return resp
        params = None
        asked = body.get("kv_transfer_params") or {}
        if asked.get("do_remote_decode") and self.issue_params:
            blocks = list(range(self._next_block, self._next_block + 2))
            self._next_block += 2
            remote_rid = f"cmpl-{rid}-0"
            params = {
                "do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": self.engine_id,
                "remote_block_ids": blocks, "remote_request_id": remote_rid, "remote_host": self.host,
                "remote_port": 5600, "tp_size": 1, "remote_num_tokens": prompt_tokens(body),
                "transfer_mode": "pull",
            }  # fmt: skip
            self.issued[remote_rid] = params
            self.held[remote_rid] = time.monotonic() + self.lease_s
        answer = _full(rid, chat, [first], "length")
        answer["kv_transfer_params"] = params
        return web.json_response(answer)


# vLLM 0.32's answers on decode (entrypoints/openai/engine/protocol.py ErrorResponse; v1/engine/exceptions.py)
INTERNAL_ERROR = {
    "message": "Internal server error",
    "type": "InternalServerError",
    "param": None,
    "code": 500,
}
ENGINE_DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."
KV_BLOCK_BYTES = (
    262144  # one 32-token block of the tiny Llama's KV (8 layers x K,V x 4 heads x 64 x 2 B x 32)
)


class DecodeCounters:
    """Decode's own /metrics, as vLLM 0.32 names them (Prometheus adds ``_total`` to counters).

    What each path moves was measured on the real CPU pair (``tests/test_vllm_pair.py``, task 6):

    - a KV load that worked: ``prompt_tokens_by_source{source="external_kv_transfer"}`` += n and one
      NIXL read (``nixl_xfer_time_seconds_count`` += 1, ``nixl_bytes_transferred_sum`` += the bytes);
    - a KV load that failed (``nixl_num_failed_transfers`` += 1, under either policy): under ``fail``
      the request errors before its first token, so ``prompt_tokens_by_source`` does not move; under
      ``recompute`` decode prefills it: ``local_compute`` += n;
    - both failures still move the ADMISSION counters, which record the load the scheduler planned:
      ``prompt_tokens_cached_by_source{source="p2p"}`` and ``external_prefix_cache_hits`` += n;
    - no connector (decode launched without ``--kv-transfer-config``): no ``vllm:nixl_*`` series at
      all, and every prompt is ``local_compute``.
    """

    SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")

    def __init__(self, connector: bool = True) -> None:
        self.connector = connector
        self.by_source = dict.fromkeys(self.SOURCES, 0.0)
        self.prompt_tokens = 0.0
        self.p2p_cached = 0.0  # admission: planned external tokens
        self.external_queries = 0.0
        self.external_hits = 0.0
        self.xfer_count = 0.0
        self.xfer_seconds = 0.0
        self.bytes_count = 0.0
        self.bytes_sum = 0.0
        self.failed_transfers = 0.0
        self.success: dict[str, float] = {}

    def render(self) -> str:
        base = 'engine="0",model_name="fake"'
        lines = ["# TYPE vllm:prompt_tokens_by_source_total counter"]
        lines += [
            f'vllm:prompt_tokens_by_source_total{{{base},source="{s}"}} {v}'
            for s, v in self.by_source.items()
        ]
        lines += [f"vllm:prompt_tokens_total{{{base}}} {self.prompt_tokens}",
                  f'vllm:prompt_tokens_cached_by_source_total{{{base},source="p2p"}} {self.p2p_cached}',
                  f"vllm:external_prefix_cache_queries_total{{{base}}} {self.external_queries}",
                  f"vllm:external_prefix_cache_hits_total{{{base}}} {self.external_hits}"]  # fmt: skip
        lines += [
            f'vllm:request_success_total{{{base},finished_reason="{r}"}} {v}' for r, v in self.success.items()
        ]
        if self.connector:
            lines += ["# TYPE vllm:nixl_xfer_time_seconds histogram",
                      f"vllm:nixl_xfer_time_seconds_count{{{base}}} {self.xfer_count}",
                      f"vllm:nixl_xfer_time_seconds_sum{{{base}}} {self.xfer_seconds}",
                      f"vllm:nixl_bytes_transferred_count{{{base}}} {self.bytes_count}",
                      f"vllm:nixl_bytes_transferred_sum{{{base}}} {self.bytes_sum}",
                      f"vllm:nixl_num_failed_transfers_total{{{base}}} {self.failed_transfers}",
                      f"vllm:nixl_num_failed_notifications_total{{{base}}} 0.0",
                      f"vllm:nixl_num_kv_expired_reqs_total{{{base}}} 0.0"]  # fmt: skip
        return "\n".join(lines) + "\n"


class FakeDecode(FakeUpstream):
    """A vLLM decode instance (``kv_consumer``) as the proxy sees it, with vLLM 0.32's reactions to
    ``kv_transfer_params`` (its request field, or a ``kv_transfer_params`` key of ``vllm_xargs``):

    - params a known prefill issued (and unchanged): the KV "loads", that prefill's blocks are released
      (with no ``prefills`` given, e.g. run as a separate process, complete params always load);
    - other params with ``do_remote_prefill``: a failed KV load. ``kv_load_failure_policy`` "fail"
      answers 500 (JSON) or 200 with an error event then ``[DONE]`` (SSE), as vLLM's serving layer
      does; "recompute" answers normally, having prefilled locally;
    - the inputs that kill vLLM 0.32's engine core (``dead`` says why; the fake then stops listening,
      as the real server exits): ``do_remote_prefill`` without ``remote_block_ids``
      (nixl/pull_scheduler.py ``update_state_after_alloc``: ``assert num_external_tokens == 0``), or a
      falsy non-object ``kv_transfer_params`` smuggled in ``vllm_xargs`` (``""``, ``0``, ``[]``:
      ``params.get`` in nixl/base_scheduler.py ``on_new_request``); a truthy non-object fails only the
      request (500, v1/engine/output_processor.py);
    - block ids without a host/port/engine/request id: the request waits for a KV that never comes
      (WAITING_FOR_REMOTE_KVS has no timeout): the fake hangs until its client goes away;
    - what vLLM's request model refuses gets a 400: a ``kv_transfer_params`` that is not an object, a
      ``vllm_xargs`` that is not an object or holds an object value.

    ``connector=False`` is a decode started without ``--kv-transfer-config``: it ignores every param
    and prefills locally (the matrix row ``connector_prefill_only``). ``admit_delay_s``: time before a
    received request reaches the engine; a client that leaves within it was never admitted (nothing is
    released on prefill). ``counters`` / ``GET /metrics``: see ``DecodeCounters``.
    """

    role = "decode"

    def __init__(
        self,
        behaviour: str = "ok",
        *,
        prefills: list[FakePrefill] | None = None,
        require_kv_params: bool = False,
        ttft_s: float = 0.0,
        itl_s: float = 0.0,
        die_after: int = 1,
        pad_bytes: int = 0,
        connector: bool = True,
        kv_load_failure_policy: str = "fail",
        admit_delay_s: float = 0.0,
        **kw: Any,
    ) -> None:
        super().__init__(behaviour, **kw)
        if kv_load_failure_policy not in ("fail", "recompute"):
            raise ValueError(
                f"kv_load_failure_policy must be fail or recompute, got {kv_load_failure_policy!r}"
            )
        self.pad_bytes = pad_bytes
        self.prefills = list(prefills or [])
        self.require_kv_params = require_kv_params
        self.ttft_s, self.itl_s, self.die_after = ttft_s, itl_s, die_after
        self.connector = connector
        self.kv_load_failure_policy = kv_load_failure_policy
        self.admit_delay_s = admit_delay_s
        self.counters = DecodeCounters(connector)
        self.dead: str | None = None  # why the engine core died (the server then stops listening)
        self.cancelled: set[str | None] = set()
        self.cancel_event = asyncio.Event()

    def _app(self) -> web.Application:
        app = super()._app()
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.counters.render(), content_type="text/plain")

    def _on_cancel(self, seen: Seen) -> None:
        self.cancelled.add(seen.request_id)
        self.cancel_event.set()
        if seen.admitted:  # vLLM aborts it: a read finishes, or an unscheduled one sends an empty read
            self._release(seen.kv_transfer_params)

    def _issuer(self, params: Any) -> FakePrefill | None:
        """The known prefill that issued exactly these params, or None."""
        if not isinstance(params, dict):
            return None
        for p in self.prefills:
            issued = p.issued.get(params.get("remote_request_id"))
            if issued is not None and issued == params and p.engine_id == params.get("remote_engine_id"):
                return p
        return None

    def _release(self, params: Any) -> None:
        issuer = self._issuer(params)
        if issuer is not None:
            issuer.release(params["remote_request_id"])

    def _die(self, why: str) -> web.Response:
        self.dead = why
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self.kill()))
        error = {"message": ENGINE_DEAD, "type": "InternalServerError", "param": None, "code": 500}
        return web.json_response({"error": error}, status=500)

    def _effective_params(self, body: dict) -> tuple[Any, web.Response | None]:
        """What vLLM's request model makes of the body: (params the engine sees, or a 400 answer)."""
        xargs, top = body.get("vllm_xargs"), body.get("kv_transfer_params")
        for name, value in (
            ("kv_transfer_params", top),
            ("ec_transfer_params", body.get("ec_transfer_params")),
        ):
            if value is not None and not isinstance(value, dict):
                return None, bad_request(
                    InvalidBody(name, f"body.{name}: Input should be a valid dictionary")
                )
        if xargs is not None and (
            not isinstance(xargs, dict) or any(isinstance(v, dict) for v in xargs.values())
        ):
            return None, bad_request(InvalidBody("vllm_xargs", "body.vllm_xargs: Input should be a valid dictionary "
                                                 "of strings, numbers or lists"))  # fmt: skip
        extra = dict(xargs or {})
        if top:  # protocol.py to_sampling_params: a truthy top-level object wins over vllm_xargs'
            extra["kv_transfer_params"] = top
        return extra.get("kv_transfer_params"), None

    async def _answer(self, request: web.Request, body: dict, seen: Seen) -> web.StreamResponse:
        params, refused = self._effective_params(body)
        if refused is not None:
            return refused
        seen.kv_transfer_params = params
        if self.admit_delay_s:
            await asyncio.sleep(self.admit_delay_s)
        seen.admitted = True
        if params is None and self.require_kv_params:
            msg = "fake decode: expected kv_transfer_params from the prefill answer, got none"
            return web.json_response({"error": {"message": msg, "code": 400}}, status=400)
        n = prompt_tokens(body)
        c = self.counters
        source, load_failed = "local_compute", False
        if self.connector and params is not None:
            if not isinstance(params, dict):
                if not params:
                    return self._die(
                        f"kv_transfer_params {params!r}: 'params.get' on a non-object in on_new_request"
                    )
                return web.json_response({"error": INTERNAL_ERROR}, status=500)
            if params.get("do_remote_prefill"):
                if not params.get("remote_block_ids"):
                    return self._die(
                        "do_remote_prefill without remote_block_ids: assert num_external_tokens == 0"
                    )
                if not all(
                    params.get(k)
                    for k in ("remote_engine_id", "remote_request_id", "remote_host", "remote_port")
                ):
                    await asyncio.sleep(3600)  # WAITING_FOR_REMOTE_KVS, no timeout
                c.p2p_cached += n  # admission: the scheduler planned an external load
                c.external_queries += n
                c.external_hits += n
                if self._issuer(params) is not None or not self.prefills:  # no prefills known: trusted
                    source = "external_kv_transfer"
                    c.xfer_count += 1
                    c.xfer_seconds += 0.005
                    c.bytes_count += 1
                    c.bytes_sum += KV_BLOCK_BYTES * _count_blocks(params["remote_block_ids"])
                    self._release(params)
                else:
                    c.failed_transfers += 1
                    load_failed = True
        if load_failed and self.kv_load_failure_policy == "fail":
            c.success["error"] = c.success.get("error", 0.0) + 1
            why = f"fake decode: KV load failed (failure_policy=fail): no known prefill issued {params!r}"
            if not body.get("stream"):
                return web.json_response({"error": INTERNAL_ERROR | {"message": why}}, status=500)
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await resp.prepare(request)
            await resp.write(f"data: {json.dumps({'error': INTERNAL_ERROR | {'message': why}})}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            seen.outcome = "failed"
            return resp
        c.by_source[source] += n
        c.prompt_tokens += n
        c.success["length"] = c.success.get("length", 0.0) + 1
        return await self._generate(request, body, seen)

    async def _generate(self, request: web.Request, body: dict, seen: Seen) -> web.StreamResponse:
        rid = seen.request_id or f"anon-{uuid.uuid4().hex[:8]}"
        chat = request.path.endswith("chat/completions")
        n = requested_tokens(body)
        texts = [token_text(body, i) for i in range(n)]
        if self.ttft_s:
            await asyncio.sleep(self.ttft_s)
        if not body.get("stream"):
            if self.itl_s:
                await asyncio.sleep(self.itl_s * max(n - 1, 0))
            return web.json_response(_full(rid, chat, texts, "length"))

        def event(i: int, text: str) -> bytes:
            chunk = _chunk(rid, chat, text, i, "length" if i == n - 1 else None)
            if self.pad_bytes:
                chunk["pad"] = "x" * self.pad_bytes
            return f"data: {json.dumps(chunk)}\n\n".encode()

        if self.behaviour == "end_early":  # raw HTTP: no length, no chunking; the close ends the body
            seen.outcome = "failed"
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            partial = event(self.die_after, texts[min(self.die_after, n - 1)])[:20]
            request.transport.write(
                head + b"".join(event(i, t) for i, t in enumerate(texts[: self.die_after])) + partial
            )
            request.transport.close()
            return web.Response(status=500)  # never delivered: the connection is closing
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            for i, text in enumerate(texts):
                if i and self.itl_s:
                    await asyncio.sleep(self.itl_s)
                if (
                    i == self.die_after and self.behaviour == "error_event"
                ):  # vLLM: GenerationError mid-stream
                    seen.outcome = "failed"
                    await resp.write(f"data: {json.dumps({'error': INTERNAL_ERROR})}\n\n".encode())
                    break
                if self.behaviour in ("die_mid_stream", "cut_mid_event") and i == self.die_after:
                    seen.outcome = "failed"
                    if self.behaviour == "cut_mid_event":
                        await resp.write(event(i, text)[:20])
                        await asyncio.sleep(0.05)  # let the half event leave before the cut
                    request.transport.abort()
                    return resp
                await resp.write(event(i, text))
            await resp.write(b"data: [DONE]\n\n")
        except ConnectionError:
            seen.outcome = "cancelled"
            self._on_cancel(seen)
            return resp
        return resp


def _count_blocks(block_ids: Any) -> int:
    """How many block ids: a flat list, or one list per KV-cache group (vLLM 0.32)."""
    return sum(len(g) if isinstance(g, list) else 1 for g in block_ids)


def prompt_tokens(body: dict[str, Any]) -> int:
    """The fake's prompt length in tokens: a token-id list's length; a text prompt (or the chat
    messages' text) counts one token per whitespace-separated word, at least 1."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    if "messages" in body:
        text = " ".join(str(m.get("content", "")) for m in body.get("messages") or [] if isinstance(m, dict))
    else:
        text = str(prompt or "")
    return max(1, len(text.split()))


def _chunk(rid: str, chat: bool, text: str, i: int, finish: str | None) -> dict[str, Any]:
    if chat:
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish, "token_ids": [i]}
        return {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion.chunk",
            "model": "fake",
            "choices": [choice],
        }
    choice = {"index": 0, "text": text, "finish_reason": finish, "token_ids": [i]}
    return {"id": f"cmpl-{rid}", "object": "text_completion", "model": "fake", "choices": [choice]}


def _full(rid: str, chat: bool, texts: list[str], finish: str) -> dict[str, Any]:
    text = "".join(texts)
    usage = {"prompt_tokens": 8, "completion_tokens": len(texts), "total_tokens": 8 + len(texts)}
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        return {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "model": "fake",
            "choices": [choice],
            "usage": usage,
        }
    choice = {"index": 0, "text": text, "finish_reason": finish, "token_ids": list(range(len(texts)))}
    return {
        "id": f"cmpl-{rid}",
        "object": "text_completion",
        "model": "fake",
        "choices": [choice],
        "usage": usage,
    }


# -------------------------------------------------------------------------------------------------- CLI


async def _serve(args: argparse.Namespace) -> None:
    if args.role == "prefill":
        fake: FakeUpstream = FakePrefill(delay_s=args.delay, host=args.host, port=args.port)
    else:
        fake = FakeDecode(
            ttft_s=args.ttft,
            itl_s=args.itl,
            host=args.host,
            port=args.port,
            connector=not args.no_connector,
            kv_load_failure_policy=args.policy,
        )
    await fake.start()
    print(f"fake {args.role} listening on {fake.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pdpair.testing.fakes", description="a fake vLLM P/D upstream"
    )
    parser.add_argument("--role", choices=("prefill", "decode"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="prefill: seconds before answering")
    parser.add_argument("--ttft", type=float, default=0.0, help="decode: seconds before the first token")
    parser.add_argument("--itl", type=float, default=0.0, help="decode: seconds between tokens")
    parser.add_argument("--no-connector", action="store_true", help="decode: launched without a KV connector")
    parser.add_argument(
        "--policy", choices=("fail", "recompute"), default="fail", help="decode: kv_load_failure_policy"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

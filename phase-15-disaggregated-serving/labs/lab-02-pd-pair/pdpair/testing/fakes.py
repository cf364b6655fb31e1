"""Small vLLM-like upstreams that speak the P/D protocol, for tests, drills and the benchmark.

``FakePrefill`` answers like a vLLM ``kv_producer``: a non-streaming completion of one token whose JSON
carries ``kv_transfer_params`` (``do_remote_prefill: true``, ``remote_engine_id``, ``remote_block_ids``,
``remote_request_id``, ``remote_host``, ``remote_port``, ``tp_size``, ``remote_num_tokens``,
``transfer_mode: "pull"``). Asked to stream (which a real prefill would do, without the params) it
streams one token and no params.

``FakeDecode`` answers like a ``kv_consumer``: it checks the ``kv_transfer_params`` it receives were
issued by one of the prefills it knows (else 500, as a failed KV load does under policy ``fail``); with
``require_kv_params`` it refuses requests that carry none (400). It then streams ``max_tokens`` tokens
(SSE, or one JSON answer) whose text is unique per request and position, with ``ttft_s`` before the
first and ``itl_s`` between the others.

Both validate the body as vLLM's pydantic models do, for the fields they read: a body that is not a
JSON object, or ``max_tokens``/``max_completion_tokens`` that is not an integer >= 1, gets vLLM's 400
(``{"error": {"message", "type": "Bad Request", "param", "code": 400}}``, vLLM 0.32
``entrypoints/serve/exception_handling/handlers/validation.py``), never a 500.

Both record every request (``.requests``: path, body, headers, received params) and both can be told
to misbehave (``behaviour``): ``ok``, ``error500``, ``error400``, ``hang`` (never answer), ``die``
(drop the connection without an answer), ``die_mid_stream`` (decode: drop it after ``die_after``
tokens), ``cut_mid_event`` (decode: after ``die_after`` tokens send half an event, then drop the
connection), ``end_early`` (decode: an answer without a length or chunking, ``Connection: close``,
that ends cleanly after ``die_after`` tokens and half an event, with no ``[DONE]``); ``stop()``
refuses connections (the port is closed) and ``kill()`` also cuts open ones. ``pad_bytes`` (decode)
adds that many bytes to every streamed event, to fill a slow client's buffers quickly.
``FakeDecode.cancelled`` holds the request ids whose client (the proxy) went away mid-answer.
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

BEHAVIOURS = ("ok", "error500", "error400", "hang", "die", "die_mid_stream", "cut_mid_event", "end_early")


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
    kv_transfer_params: dict[str, Any] | None = None
    outcome: str = "pending"  # pending | answered | failed | cancelled


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
    """A vLLM prefill instance (``kv_producer``) as the proxy sees it. ``delay_s``: compute time."""

    role = "prefill"

    def __init__(
        self, behaviour: str = "ok", delay_s: float = 0.0, engine_id: str | None = None,
        issue_params: bool = True, **kw: Any,
    ) -> None:  # fmt: skip
        super().__init__(behaviour, **kw)
        self.delay_s = delay_s
        self.issue_params = issue_params  # False: a prefill launched without a KV connector
        self.engine_id = engine_id or f"prefill-{uuid.uuid4().hex[:8]}"
        self.issued: dict[str, dict[str, Any]] = {}  # remote_request_id -> kv_transfer_params handed out
        self._next_block = 0

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
                "remote_port": 5600, "tp_size": 1, "remote_num_tokens": 8, "transfer_mode": "pull",
            }  # fmt: skip
            self.issued[remote_rid] = params
        answer = _full(rid, chat, [first], "length")
        answer["kv_transfer_params"] = params
        return web.json_response(answer)


class FakeDecode(FakeUpstream):
    """A vLLM decode instance (``kv_consumer``) as the proxy sees it."""

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
        **kw: Any,
    ) -> None:
        super().__init__(behaviour, **kw)
        self.pad_bytes = pad_bytes
        self.prefills = list(prefills or [])
        self.require_kv_params = require_kv_params
        self.ttft_s, self.itl_s, self.die_after = ttft_s, itl_s, die_after
        self.cancelled: set[str | None] = set()
        self.cancel_event = asyncio.Event()

    def _on_cancel(self, seen: Seen) -> None:
        self.cancelled.add(seen.request_id)
        self.cancel_event.set()

    def _check_params(self, params: Any) -> str | None:
        """None if the params are ones a known prefill issued, else why not."""
        if not isinstance(params, dict) or params.get("do_remote_prefill") is not True:
            return (
                f"kv_transfer_params must come from a prefill answer (do_remote_prefill true), got {params!r}"
            )
        for p in self.prefills:
            issued = p.issued.get(params.get("remote_request_id"))
            if issued is not None and p.engine_id == params.get("remote_engine_id"):
                return (
                    None
                    if issued == params
                    else f"kv_transfer_params differ from what prefill issued: {issued}"
                )
        return f"no known prefill issued these kv_transfer_params: {params!r}"

    async def _answer(self, request: web.Request, body: dict, seen: Seen) -> web.StreamResponse:
        params = body.get("kv_transfer_params")
        if params is None and self.require_kv_params:
            msg = "fake decode: expected kv_transfer_params from the prefill answer, got none"
            return web.json_response({"error": {"message": msg, "code": 400}}, status=400)
        if params is not None and self.prefills:
            why = self._check_params(params)
            if why is not None:  # what a failed KV load does under kv_load_failure_policy "fail"
                return web.json_response(
                    {"error": {"message": f"fake decode: KV load failed: {why}", "code": 500}}, status=500
                )
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
        fake = FakeDecode(ttft_s=args.ttft, itl_s=args.itl, host=args.host, port=args.port)
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
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A naive P/D proxy for comparison (not the lab's): FastAPI + httpx, the same protocol, no fallback.

Written the way vLLM's example proxies for disaggregated serving are (a FastAPI app, one
``httpx.AsyncClient`` per upstream with httpx's default limits, the prefill call with ``max_tokens=1``
and ``kv_transfer_params: {"do_remote_decode": true}``, then decode streamed back through a
``StreamingResponse``), so ``bench_proxy.py`` can show what the lab's proxy costs next to it. It has
none of the lab proxy's limits, metrics or fallbacks: a failed prefill is a 502.

    python tools/naive_proxy.py --prefill URL --decode URL --port 0     (needs fastapi, httpx, uvicorn)

Prints ``naive proxy listening on URL`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import socket
import sys
import uuid

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def build_app(prefill_urls: list[str], decode_urls: list[str]) -> FastAPI:
    app = FastAPI()
    prefills = itertools.cycle([httpx.AsyncClient(base_url=u, timeout=None) for u in prefill_urls])
    decodes = itertools.cycle([httpx.AsyncClient(base_url=u, timeout=None) for u in decode_urls])

    async def handle(request: Request, path: str):
        body = await request.json()
        request_id = request.headers.get("X-Request-Id") or str(uuid.uuid4())
        headers = {"X-Request-Id": request_id}
        pbody = copy.deepcopy(body)
        pbody.update(max_tokens=1, stream=False, kv_transfer_params={"do_remote_decode": True,
                     "do_remote_prefill": False, "remote_engine_id": None, "remote_block_ids": None,
                     "remote_host": None, "remote_port": None})  # fmt: skip
        pbody.pop("stream_options", None)
        if "max_completion_tokens" in pbody:
            pbody["max_completion_tokens"] = 1
        answer = await next(prefills).post(path, json=pbody, headers=headers)
        if answer.status_code != 200:
            return JSONResponse(answer.json(), status_code=502)
        dbody = dict(body, kv_transfer_params=answer.json().get("kv_transfer_params"))
        client = next(decodes)

        async def relay():
            async with client.stream("POST", path, json=dbody, headers=headers) as resp:
                async for chunk in resp.aiter_bytes():
                    yield chunk

        if body.get("stream"):
            return StreamingResponse(relay(), media_type="text/event-stream")
        resp = await client.post(path, json=dbody, headers=headers)
        return JSONResponse(resp.json(), status_code=resp.status_code)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await handle(request, "/v1/chat/completions")

    return app


async def _serve(app: FastAPI, host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    print(f"naive proxy listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="naive_proxy.py", description=__doc__.splitlines()[0])
    parser.add_argument("--prefill", action="append", required=True)
    parser.add_argument("--decode", action="append", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    app = build_app([u.rstrip("/") for u in args.prefill], [u.rstrip("/") for u in args.decode])
    try:
        import uvloop  # what uvicorn's default loop setting picks when it is installed
    except ImportError:
        asyncio.run(_serve(app, args.host, args.port))
    else:
        uvloop.run(_serve(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

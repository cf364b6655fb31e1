"""``python -m pdpair.proxy``: the proxy as a process around the chosen implementation's policy.

    python -m pdpair.proxy --prefill http://127.0.0.1:8100 --decode http://127.0.0.1:8200 --port 8000

It binds 127.0.0.1 unless told otherwise, prints ``pdpair proxy listening on URL`` once it accepts
connections, and runs on uvloop when that is installed (``--no-uvloop`` to compare). Every limit of
``ProxyConfig`` has a flag; ``--help`` lists them with their defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys

from pdpair import LAB_DIR

from .config import ProxyConfig
from .replies import Policy
from .server import ProxyServer


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


# ProxyConfig fields that get a --flag (host and port are spelled out below)
_FLAGS = [f for f in dataclasses.fields(ProxyConfig) if f.name not in ("host", "port")]


def _flag(name: str) -> str:
    return "--" + name.removesuffix("_s").replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdpair.proxy", description="lab-02 P/D proxy",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--prefill", action="append", default=[], help="prefill upstream URL (repeatable)")
    parser.add_argument("--decode", action="append", required=True, help="decode upstream URL (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 = a free port (printed on stdout)")
    parser.add_argument(
        "--impl", default=None, help="solution | starter | path (default: $LAB_IMPL or solution)"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own event loop")
    for f in _FLAGS:
        unit = "seconds" if f.name.endswith("_s") else "count" if "max_" in f.name else ""
        parser.add_argument(_flag(f.name), dest=f.name, type=type(f.default), default=f.default, help=unit)
    args = parser.parse_args(argv)
    strip = [u.rstrip("/") for u in args.prefill], [u.rstrip("/") for u in args.decode]
    try:
        config = ProxyConfig(
            host=args.host, port=args.port, **{f.name: getattr(args, f.name) for f in _FLAGS}
        )
    except ValueError as exc:
        parser.error(str(exc))
    impl = load_impl(args.impl)
    policy = impl.PDProxyPolicy(*strip)
    serve = _serve(policy, config, {"prefill": strip[0], "decode": strip[1]})
    uvloop = None
    if not args.no_uvloop:
        try:
            import uvloop
        except ImportError:
            uvloop = None
    if uvloop is not None:
        uvloop.run(serve)
    else:
        asyncio.run(serve)
    return 0

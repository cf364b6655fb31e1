"""Churn the machine's ephemeral ports the way a busy laptop does: outbound loopback connections, many
held open, the rest opened and closed in a loop. Bounded in time, connections and rate; loopback only.

Each outbound connection takes a source port from the kernel's ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``). A port picked by ``bind(0)``, closed and bound again later
(the runner's old way) can be taken in between; one picked outside that range (``pdpair.pair.procs.pick_port``)
cannot. Run it beside the ``vllm`` tier to check::

    python -m pdpair.load.churn --seconds 900 --hold 2000 &
    LAB_REQUIRE_VLLM=1 .venv/bin/python -m pytest phase-15-disaggregated-serving/labs/lab-02-pd-pair -m vllm

It prints one summary line a minute and one at the end: connections opened, held, distinct source ports
seen. Stops at ``--seconds``, on Ctrl-C or SIGTERM, closing everything it opened.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
import time
from collections import deque

MAX_HOLD = 10_000  # never hold more sockets than this (each is two fds: our end and the listener's)


def churn(seconds: float, hold: int, rate_per_s: float, report_every_s: float = 60.0) -> dict[str, int]:
    """Open outbound loopback connections for ``seconds`` (``rate_per_s`` new ones a second), keeping
    the newest ``hold`` open; returns ``{"opened", "held_max", "distinct_ports"}``. All closed on return.

    ``hold`` is capped by ``MAX_HOLD`` and by the process's open-file limit (half of it, less 64)."""
    if seconds <= 0 or rate_per_s <= 0 or hold < 0:
        raise ValueError("seconds and rate_per_s must be > 0 and hold >= 0")
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    hold = min(hold, MAX_HOLD, max(0, soft // 2 - 64))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    held: deque[tuple[socket.socket, socket.socket | None]] = deque()
    seen: set[int] = set()
    opened = held_max = 0
    stop_at = time.monotonic() + seconds
    next_report = time.monotonic() + report_every_s
    interval = 1.0 / rate_per_s
    try:
        while time.monotonic() < stop_at:
            client = socket.socket()
            try:
                client.connect(listener.getsockname())
            except OSError as err:  # the ephemeral range is exhausted: exactly the pressure we want
                client.close()
                print(f"churn: connect failed ({err}); holding {len(held)}", file=sys.stderr, flush=True)
                time.sleep(0.5)
                continue
            seen.add(client.getsockname()[1])
            accepted = None
            with contextlib.suppress(BlockingIOError):
                accepted, _ = listener.accept()
            held.append((client, accepted))
            opened += 1
            while len(held) > hold:
                for s in held.popleft():
                    if s is not None:
                        s.close()
            held_max = max(held_max, len(held))
            if time.monotonic() >= next_report:
                print(f"churn: {opened} opened, {len(held)} held, {len(seen)} distinct ports", flush=True)
                next_report += report_every_s
            time.sleep(interval)
    finally:
        for pair in held:
            for s in pair:
                if s is not None:
                    s.close()
        listener.close()
    return {"opened": opened, "held_max": held_max, "distinct_ports": len(seen)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pdpair.load.churn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long (default 600)")
    parser.add_argument("--hold", type=int, default=2000, help="connections kept open (default 2000)")
    parser.add_argument("--rate", type=float, default=200.0, help="new connections per second (default 200)")
    args = parser.parse_args(argv)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        result = churn(args.seconds, args.hold, args.rate)
        print(f"churn done: {result['opened']} opened, at most {result['held_max']} held, "
              f"{result['distinct_ports']} distinct source ports", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

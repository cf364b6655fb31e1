"""What does the proxy cost? Latency added by the P/D proxy versus talking to decode directly.

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/bench_proxy.py [--impl solution]

Not a test. Everything runs on this machine as separate processes on 127.0.0.1: a fake prefill (answers
at once), a fake decode (streams --tokens tokens, --itl-ms apart), the proxy (``python -m pdpair.proxy``
with the chosen implementation's policy) and this client. At each concurrency (1, 8, 32 closed-loop
streams) it measures, in one run and interleaved round by round, three paths:

- direct:  client -> decode                         (the baseline)
- naive:   client -> naive proxy -> prefill, then decode  (naive_proxy.py: FastAPI + httpx, the way
           vLLM's example proxies are written, same protocol, no fallback; skipped without fastapi)
- relay:   client -> proxy -> decode                (no prefill pool: the proxy's own relay cost)
- handoff: client -> proxy -> prefill, then decode  (the full P/D handoff, prefill instant)

and reports TTFT, ITL and end-to-end latency p50/p99 (nearest rank) per path, the added ms over direct,
the ratio to direct, and how the handoff's added TTFT compares with the naive proxy's. The fakes do no
compute, so every added millisecond is proxy work plus one extra loopback hop (two for a handoff) plus
CPU contention between the processes. On a shared machine only ratios from ONE run mean anything.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from labkit.capture import percentile as nearest_rank
from labkit.machine import cpu_model
from pdpair import VLLM_VERSION
from pdpair.load.client import stream_request
from pdpair.pair.procs import start_listening, stop_processes

LAB = Path(__file__).resolve().parents[1]  # the lab folder


async def one_round(session, url: str, concurrency: int, per_stream: int, tokens: int, tag: str):
    ttft, itl, e2e = [], [], []

    async def stream(k: int):
        for j in range(per_stream):
            body = {"model": "fake", "prompt": f"{tag}{k}-{j}", "max_tokens": tokens, "stream": True}
            for attempt in (1, 2):  # a kept-alive connection the server closed as we reused it: retry once
                try:
                    res = await stream_request(session, url, "/v1/completions", body, timeout_s=60)
                    break
                except aiohttp.ServerDisconnectedError:
                    if attempt == 2:
                        raise
            if res.status != 200 or len(res.texts) != tokens:
                raise RuntimeError(f"{tag}: bad answer {res.status} {res.error}")
            ttft.append((res.arrivals[0] - res.sent_at) * 1e3)
            e2e.append((res.arrivals[-1] - res.sent_at) * 1e3)
            itl.extend((b - a) * 1e3 for a, b in zip(res.arrivals, res.arrivals[1:], strict=False))

    await asyncio.gather(*(stream(k) for k in range(concurrency)))
    return ttft, itl, e2e


def start_script(path: Path, args: list[str], deadline_s: float = 15.0) -> tuple[subprocess.Popen, str]:
    """``python <path> <args>`` (a tool of this lab, not a package module); returns the process and the URL
    it prints as ``... listening on URL``. RuntimeError with its stderr tail if it does not in time."""
    err = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, str(path), *args], stdout=subprocess.PIPE, stderr=err, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))  # fmt: skip
    deadline = time.monotonic() + deadline_s
    while (left := deadline - time.monotonic()) > 0:
        if select.select([proc.stdout], [], [], left)[0]:
            line = proc.stdout.readline()
            if "listening on " in line:
                err.close()
                return proc, line.split("listening on ", 1)[1].strip()
            if not line and proc.poll() is not None:
                break
    stop_processes([proc])
    err.seek(0)
    tail = err.read()[-2000:]
    err.close()
    raise RuntimeError(f"{path.name} did not start within {deadline_s}s; stderr tail:\n{tail}")


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(paths: dict[str, str], levels: list[int], rounds: int, requests: int, tokens: int,
                  pids: dict[str, int]):  # fmt: skip
    out: dict[int, dict[str, tuple[list[float], list[float], list[float]]]] = {}
    cpu: dict[int, dict[str, list[float]]] = {}  # level -> path -> [proxy CPU seconds, requests]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        for c in levels:
            per_stream = max(1, requests // (c * rounds))
            acc = {name: ([], [], []) for name in paths}
            cpu[c] = {name: [0.0, 0] for name in paths if name in pids}
            for name, url in paths.items():  # warm-up: connections, code paths
                await one_round(session, url, c, 1, tokens, f"warm-{name}-")
            for r in range(rounds):  # interleaved so drift hits every path alike
                for name, url in paths.items():
                    before = cpu_seconds(pids.get(name))
                    got = await one_round(session, url, c, per_stream, tokens, f"{name}-{r}-")
                    after = cpu_seconds(pids.get(name))
                    if before is not None and after is not None:
                        cpu[c][name][0] += after - before
                        cpu[c][name][1] += len(got[0])
                    for into, values in zip(acc[name], got, strict=True):
                        into.extend(values)
            out[c] = acc
    return out, cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impl", default="solution", help="solution | starter | path to an implementation")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=256, help="requests per path per level (about)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--itl-ms", type=float, default=5.0)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    load_start = os.getloadavg()

    print(
        f"machine: {platform.machine()} {cpu_model()}, {os.cpu_count()} CPUs; {platform.system()} {platform.release()}"
    )
    print(
        f"python {platform.python_version()}, aiohttp {aiohttp.__version__}; protocol of vLLM {VLLM_VERSION}"
    )
    print(f"workload: {args.tokens} tokens/stream, decode ITL {args.itl_ms} ms, prefill instant; "
          f"~{args.requests} requests per path per level in {args.rounds} interleaved rounds")  # fmt: skip
    procs = []
    try:
        p, prefill = start_listening(["pdpair.testing.fakes", "--role", "prefill"])
        procs.append(p)
        d, decode = start_listening(
            ["pdpair.testing.fakes", "--role", "decode", "--itl", str(args.itl_ms / 1e3)]
        )
        procs.append(d)
        x1, relay = start_listening(["pdpair.proxy", "--impl", args.impl, "--decode", decode, "--port", "0"])
        procs.append(x1)
        x2, handoff = start_listening(
            ["pdpair.proxy", "--impl", args.impl, "--prefill", prefill, "--decode", decode, "--port", "0"]
        )
        procs.append(x2)
        paths = {"direct": decode}
        if (
            importlib.util.find_spec("fastapi")
            and importlib.util.find_spec("httpx")
            and importlib.util.find_spec("uvicorn")
        ):
            x3, naive = start_script(
                LAB / "tools" / "naive_proxy.py", ["--prefill", prefill, "--decode", decode, "--port", "0"]
            )
            procs.append(x3)
            paths["naive"] = naive
        else:
            print("naive baseline skipped: it needs fastapi, httpx and uvicorn (pip install -e '.[dev]')")
        paths.update(relay=relay, handoff=handoff)
        t0 = time.monotonic()
        pids = {"relay": x1.pid, "handoff": x2.pid, **({"naive": x3.pid} if "naive" in paths else {})}
        results, cpu = asyncio.run(measure(paths, levels, args.rounds, args.requests, args.tokens, pids))
        wall = time.monotonic() - t0
    finally:
        stop_processes(procs)

    print()
    hdr = (f"{'conc':>4} {'path':<8} {'n':>4} | {'TTFT p50':>8} {'p99':>6} | {'ITL p50':>7} {'p99':>6} | "
           f"{'e2e p50':>7} {'p99':>6} || added: {'TTFT p50':>8} {'p99':>6} | {'ITL p50':>7} {'p99':>6} | "
           f"{'e2e p50':>7} {'p99':>6} | {'e2e p50, p99 ratio':>18}")  # fmt: skip
    print(hdr)
    print("-" * len(hdr))
    for c, acc in results.items():
        base = [nearest_rank(v, q) for v in acc["direct"] for q in (50, 99)]
        for name, series in acc.items():
            m = [nearest_rank(v, q) for v in series for q in (50, 99)]
            line = (f"{c:>4} {name:<8} {len(series[0]):>4} | {m[0]:8.2f} {m[1]:6.2f} | {m[2]:7.2f} {m[3]:6.2f} | "
                    f"{m[4]:7.2f} {m[5]:6.2f} ||")  # fmt: skip
            if name == "direct":
                print(line + " (the baseline; all times in ms)")
                continue
            a = [x - y for x, y in zip(m, base, strict=True)]
            print(line + f"        {a[0]:+8.2f} {a[1]:+6.2f} | {a[2]:+7.2f} {a[3]:+6.2f} | {a[4]:+7.2f} {a[5]:+6.2f} |"
                  f" {m[4] / base[4]:8.3f} {m[5] / base[5]:8.3f}")  # fmt: skip
    print(
        f"\nmeasured in {wall:.1f} s; added = path minus direct at the same percentile; ratio = path / direct"
    )
    if all("naive" in acc for acc in results.values()):
        print("\nadded TTFT, handoff vs the naive proxy (same run, same fakes):")
        for c, acc in results.items():
            add = {n: [nearest_rank(acc[n][0], q) - nearest_rank(acc["direct"][0], q) for q in (50, 99)]
                   for n in ("naive", "handoff")}  # fmt: skip
            ratio = [
                f"{n / h:5.1f}x" if h > 0 else "  n/a"
                for n, h in zip(add["naive"], add["handoff"], strict=True)
            ]
            print(f"  {c:>3} streams: naive {add['naive'][0]:+6.2f} / {add['naive'][1]:+6.2f} ms,"
                  f" handoff {add['handoff'][0]:+6.2f} / {add['handoff'][1]:+6.2f} ms (p50 / p99);"
                  f" naive/handoff {ratio[0]} / {ratio[1]}")  # fmt: skip
    if any(v[1] for per in cpu.values() for v in per.values()):
        print(
            "\nproxy CPU per request (user+system ms of the proxy process; steadier than latency on a busy machine):"
        )
        for c, per in cpu.items():
            ms = {n: 1e3 * t / k for n, (t, k) in per.items() if k}
            ratio = (
                f"; handoff / naive x{ms['handoff'] / ms['naive']:.3f}"
                if {"handoff", "naive"} <= ms.keys()
                else ""
            )
            print(f"  {c:>3} streams: " + ", ".join(f"{n} {v:.3f}" for n, v in ms.items()) + ratio)
    print("ITL = gaps between SSE token events, pooled over requests; percentiles by nearest rank")
    print(f"load average: {' '.join(f'{x:.2f}' for x in load_start)} at the start, "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end (a published figure needs < 1 at the start)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

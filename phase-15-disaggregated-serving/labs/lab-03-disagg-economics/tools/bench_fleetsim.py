"""How fast the serving twin runs: 100,000 requests (mean 128 output tokens) through an H100-profile fleet.

    python bench_fleetsim.py [--requests 100000] [--rate 150]

Prints simulated requests per second and engine steps per second of wall time (one Python process,
so one core), for a colocated fleet and a P/D fleet. The target: 100k requests in <= 20 s.
Building lab-02-format records (a Python list of token times per request) is timed separately: the
planner needs it, a pure throughput run does not.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from fleetsim.fleet import Fleet, simulate
from fleetsim.profile import h100_profile
from fleetsim.workload import Arrival

HERE = Path(__file__).resolve().parents[1]  # the lab folder


def workload(n: int, rate: float, seed: int = 0) -> list[Arrival]:
    """Poisson arrivals; prompts uniform 64-1024 tokens, answers uniform 64-192 (mean 128)."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(Arrival(t, rng.randint(64, 1024), rng.randint(64, 192)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=150.0, help="req/s offered to a 4-GPU fleet")
    args = ap.parse_args(argv)
    work = workload(args.requests, args.rate)
    profile = h100_profile("llama-3-8b")
    mean_out = sum(a.output_tokens for a in work) / len(work)
    print(f"{len(work)} requests, mean output {mean_out:.1f} tokens, {args.rate:g} req/s offered")
    ok = True
    for fleet in (Fleet(colocated=4), Fleet(prefill=1, decode=3, threshold=256, routing="least-loaded")):
        t0 = time.process_time()
        res = simulate(fleet, profile, work)
        sim_s = time.process_time() - t0
        t0 = time.process_time()
        recs = res.records()
        rec_s = time.process_time() - t0
        done = sum(r.ok for r in recs)
        print(f"  {fleet.name:28s} simulate {sim_s:6.2f} s CPU: {len(work) / sim_s:9.0f} requests/s, "
              f"{res.steps / sim_s:9.0f} steps/s ({res.steps} steps, {done} finished); records +{rec_s:.2f} s")  # fmt: skip
        ok &= sim_s + rec_s <= 20.0 and done == len(work)
    print("target (100k requests in <= 20 s each, records included):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

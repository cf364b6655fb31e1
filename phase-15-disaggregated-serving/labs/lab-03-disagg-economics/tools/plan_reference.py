"""Record what the graded tests of tasks 13 and 15 compare with: the twin's answers (INSTRUCTORS ONLY:
its output is task 15's answer key - a student who runs it has read the answers).

    python plan_reference.py                 # -> plans/reference.json (both parts; CPU seconds in cpu_s)
    python plan_reference.py --only capacity # or --only plans

1. Part 3's reference prices: for every scenario of ``fleetsim.plans.SCENARIOS``, the cheapest plan of
   ``all_plans`` below that meets it on the twin (``reference_search``: every plan, cheapest first,
   simulated with ``fleetsim.plans.score`` until one meets). A student's plan passes within 10% of that
   price. Only the price is written (the plan is task 15's answer); this tool prints the plan. Two
   plans may share the cheapest price (mix-loose: a colocated and a prefill:decode plan of three H100s):
   the grader compares prices, so either - or anything within 10% - passes.
2. Task 13's twin check: for each CAPACITY_CASES row (one H100 roofline profile, fixed prompt and
   answer lengths, Poisson arrivals), the goodput of every prefill:decode split of 4 GPUs as
   ``fleetsim.planner.search`` finds it (rate doubling and bisection; attainment = TTFT and every gap
   within the SLOs for >= 90% of requests; prefill instances run one prompt per step). The analytic
   split of task 13 is held to the twin's best split and goodput.
No student code runs here: attainment and goodput are computed by this file, so a recording does not
depend on any implementation. Everything is deterministic (seeded): a re-run on any machine writes the
same numbers; the file records the date, the command and the load anyway.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import time
from pathlib import Path

from disagg.tables import Plan, Scenario
from fleetsim.fleet import Fleet
from fleetsim.planner import search
from fleetsim.plans import REFERENCE_FILE, SCENARIOS, Score, _met, price, score
from fleetsim.profile import h100_profile
from fleetsim.workload import Arrival

BUDGETS = (None, 512)  # the budgets the reference search tries (None: vLLM's default, 8192)
THRESHOLDS = (None, 512)  # the P/D thresholds it tries (None: every prompt remote)

CAPACITY_INSTANCES = 4
# (prompt tokens, output tokens, TTFT SLO ms, ITL SLO ms): each row's best split differs
CAPACITY_CASES = [(2048, 256, 500.0, 30.0), (4096, 128, 1000.0, 25.0), (1024, 512, 300.0, 20.0), (8192, 64, 2000.0, 30.0)]  # fmt: skip
TARGET = 0.9


def fixed_lengths(prompt: int, out: int):
    def arrivals(n: int) -> list[Arrival]:
        rng, t, work = random.Random(0), 0.0, []
        for _ in range(n):
            t += rng.expovariate(1.0)
            work.append(Arrival(t, prompt, out))
        return work

    return arrivals


def crossing(rates: list[float], attained: list[float]) -> float:
    """Goodput: the linear crossing of TARGET after the last good rate (0 if the first is bad)."""
    if attained[0] < TARGET:
        return 0.0
    for i in range(1, len(rates)):
        if attained[i] < TARGET:
            r0, r1, a0, a1 = rates[i - 1], rates[i], attained[i - 1], attained[i]
            return r0 + (r1 - r0) * (a0 - TARGET) / (a0 - a1)
    return rates[-1]


def capacity_rows() -> list[dict]:
    prof = h100_profile("llama-3-8b")
    rows = []
    for prompt, out, ttft, itl in CAPACITY_CASES:
        goodputs = {}
        for p in range(1, CAPACITY_INSTANCES):
            fleet = Fleet(prefill=p, decode=CAPACITY_INSTANCES - p, routing="least-loaded", budget=prompt)
            curve = search(fleet, prof, fixed_lengths(prompt, out), lambda recs, t=ttft, i=itl: _met(recs, t, i), crossing,
                           start_rate=8.0, min_requests=300, min_span_s=60 * ttft / 1e3, max_requests=2000)  # fmt: skip
            goodputs[f"{p}:{CAPACITY_INSTANCES - p}"] = round(curve.goodput, 3)
        best = max(goodputs, key=lambda k: (goodputs[k], -int(k.split(":")[0])))
        rows.append(dict(profile=prof.name, prompt_tokens=prompt, output_tokens=out, ttft_slo_ms=ttft,
                         itl_slo_ms=itl, instances=CAPACITY_INSTANCES, twin_goodput_by_split=goodputs, best=best))  # fmt: skip
        print(
            f"capacity {prompt}/{out} tokens, SLOs {ttft:g}/{itl:g} ms: {goodputs} -> best {best}", flush=True
        )
    return rows


def all_plans(scenario: Scenario) -> list[Plan]:
    """Every plan the reference search considers, cheapest first (ties: fewer GPUs, then listing order)."""
    plans = []
    for hw in scenario.menu:
        for n in range(1, scenario.max_instances + 1):
            plans += [Plan(hw, n, budget=b) for b in BUDGETS]
    for p_hw in scenario.menu:
        for d_hw in scenario.menu:
            for p in range(1, scenario.max_instances):
                for d in range(1, scenario.max_instances - p + 1):
                    plans += [
                        Plan(d_hw, d, p_hw, p, threshold=t, budget=b) for t in THRESHOLDS for b in BUDGETS
                    ]
    return sorted(plans, key=lambda q: (round(price(q), 6), q.decode + q.prefill))


def reference_search(scenario: Scenario, log=lambda msg: None) -> tuple[Plan, Score, int]:
    """The cheapest plan of ``all_plans`` that meets the scenario (walked cheapest first); also how many
    plans were simulated. A plan dominated by a cheaper failure of the same shape is still simulated:
    more GPUs of one role can hurt (routing), so nothing is pruned. Deterministic: the twin is seeded."""
    tried = 0
    for plan in all_plans(scenario):
        tried += 1
        s = score(plan, scenario)
        log(f"{price(plan):7.2f} $/h {plan} -> {s.attained:.3f}")
        if s.meets:
            return plan, s, tried
    raise RuntimeError(f"no plan meets {scenario.name}: relax its SLOs or raise max_instances")


def plan_rows() -> dict:
    out = {}
    for name, sc in SCENARIOS.items():
        t0 = time.process_time()
        plan, s, tried = reference_search(sc)
        out[name] = dict(dollars_per_hour=round(s.dollars_per_hour, 4), attained=round(s.attained, 4),
                         cpu_s=round(time.process_time() - t0, 1))  # fmt: skip
        print(
            f"{name}: {plan} at ${s.dollars_per_hour:.2f}/h, attained {s.attained:.3f} ({tried} plans simulated)"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["capacity", "plans"])
    ap.add_argument("--out", type=Path, default=REFERENCE_FILE)
    args = ap.parse_args(argv)
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    load_before = round(os.getloadavg()[0], 2)
    data = {
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python phase-15-disaggregated-serving/labs/lab-03-disagg-economics/tools/plan_reference.py",
        "note": "deterministic twin runs (seeded): the numbers do not depend on the machine or its load",
        "scenarios": old.get("scenarios", {}) if args.only == "capacity" else plan_rows(),
        "capacity": old.get("capacity", []) if args.only == "plans" else capacity_rows(),
    }
    data["loadavg_1m_before_after"] = [load_before, round(os.getloadavg()[0], 2)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

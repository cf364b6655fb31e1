"""Goodput search: how much traffic each fleet configuration serves within the SLOs.

For one configuration the planner simulates Poisson traffic at a rate - at least ``min_requests``, and
enough that arrivals last ``min_span_s`` (up to ``max_requests``), since a short burst finds empty
queues and flatters any fleet - scores the run with an
``attainment(records)`` function (lab-03 task 8) and searches the rate axis:
1. start at ``start_rate`` and double while attainment stays at or above the target (or halve until
   it does; at most ``max_doublings`` times): the last good rate and the first bad one bracket it;
2. bisect that bracket ``refine`` times;
3. hand every (rate, attainment) point, sorted, to a ``goodput(rates, attainments)`` function
   (lab-03 task 9) - its interpolation between the last good and first bad point is the answer.
Each rate is simulated with the same seed, so the curve is one workload scaled in time.
``configurations`` lists what a fleet of N instances can be: colocated (optionally with a chunked
budget), every prefill:decode split with all prompts remote, and each split with each threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetsim.fleet import Fleet, RequestRecord, simulate
from fleetsim.workload import Arrival
from labkit.capture import percentile

Attain = Callable[[list], float]
Goodput = Callable[[list[float], list[float]], float]


def configurations(instances: int, thresholds: list[int], chunk_budget: int | None = None) -> list[Fleet]:
    """Colocated N first (the baseline), then colocated with ``chunk_budget``, then every x:y split
    all-remote and with each threshold. Example: 2 instances, [256] -> colocated x2, P/D 1:1 all
    remote, P/D 1:1 local <= 256."""
    if instances < 1:
        raise ValueError(f"instances: need >= 1, got {instances}")
    fleets = [Fleet(colocated=instances)]
    if chunk_budget:
        fleets.append(Fleet(colocated=instances, budget=chunk_budget))
    for x in range(1, instances):
        fleets.append(Fleet(prefill=x, decode=instances - x, routing="least-loaded"))
        fleets += [
            Fleet(prefill=x, decode=instances - x, threshold=t, routing="least-loaded") for t in thresholds
        ]
    return fleets


@dataclass
class Curve:
    fleet: Fleet
    points: list[tuple[float, float]] = field(default_factory=list)  # (rate, attainment), sorted by rate
    goodput: float = 0.0
    at_goodput: dict = field(default_factory=dict)  # lab-02 summary at the last good rate


def fleet_summary(records: list[RequestRecord]) -> dict[str, float]:
    """TTFT and ITL p50/p99 (ms, nearest rank as lab-02's capture) over every finished request of any
    kind, the 90th percentile of each request's worst gap (what a per-request ITL SLO sees), and the
    share that did not finish."""
    ok = [r for r in records if r.ok]
    ttft = [(r.arrivals_s[0] - r.sent_s) * 1e3 for r in ok] or [float("nan")]
    per_req = [[(b - a) * 1e3 for a, b in zip(r.arrivals_s, r.arrivals_s[1:], strict=False)] for r in ok]
    gaps = [g for gs in per_req for g in gs] or [float("nan")]
    worst = [max(gs, default=0.0) for gs in per_req] or [float("nan")]
    return {"ttft_p50_ms": percentile(ttft, 50), "ttft_p99_ms": percentile(ttft, 99), "itl_p50_ms": percentile(gaps, 50),
            "itl_p99_ms": percentile(gaps, 99), "worst_gap_p90_ms": percentile(worst, 90), "unfinished": 1 - len(ok) / len(records)}  # fmt: skip


def scaled(arrivals: list[Arrival], rate: float) -> list[Arrival]:
    """The same requests with inter-arrival times scaled so the mean rate is ``rate``."""
    span = arrivals[-1].arrival_s
    k = (len(arrivals) / span) / rate
    return [Arrival(a.arrival_s * k, a.prompt_tokens, a.output_tokens, a.kind) for a in arrivals]


def search(fleet: Fleet, profile, arrivals: Callable[[int], list[Arrival]], attainment: Attain,
           goodput: Goodput, start_rate: float, target: float = 0.9, min_requests: int = 300,
           min_span_s: float = 0.0, max_requests: int = 4000, max_doublings: int = 12, refine: int = 3,
           tick: Callable[[], None] = lambda: None) -> Curve:  # fmt: skip
    """One configuration's goodput curve (see the module docstring); ``tick`` is called per simulation."""
    curve = Curve(fleet)
    results: dict[float, float] = {}
    summaries: dict[float, dict] = {}

    def at(rate: float) -> float:
        # enough requests that the load lasts min_span_s: a short burst is served from empty queues
        n = min(max(min_requests, math.ceil(rate * min_span_s)), max_requests)
        work = scaled(arrivals(n), rate)
        recs = simulate(fleet, profile, work, max_time_s=2 * work[-1].arrival_s + 120).records()
        tick()
        results[rate] = attainment(recs)
        summaries[rate] = fleet_summary(recs)
        return results[rate]

    good = bad = None
    if at(start_rate) >= target:  # double up to the first bad rate
        good = rate = start_rate
        for _ in range(max_doublings):
            rate *= 2
            if at(rate) < target:
                bad = rate
                break
            good = rate
    else:  # halve down to the first good rate
        bad = rate = start_rate
        for _ in range(max_doublings):
            rate /= 2
            if at(rate) >= target:
                good = rate
                break
            bad = rate
    if good is not None and bad is not None:
        for _ in range(refine):
            mid = (good + bad) / 2
            if at(mid) >= target:
                good = mid
            else:
                bad = mid
    curve.points = sorted(results.items())
    curve.goodput = goodput([r for r, _ in curve.points], [a for _, a in curve.points])
    if good is not None:
        curve.at_goodput = summaries[good]
    return curve

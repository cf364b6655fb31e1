"""Part 3's grader: a fleet plan simulated on the twin, its SLO attainment and its price.

``score(plan, scenario)`` builds the plan's fleet - each pool on its accelerator's roofline profile
(``profile.roofline_profile``), the KV link at the scenario's fabric, least-loaded routing - runs the
scenario's Poisson traffic through it (``requests_for(scenario)`` requests, seed 0) and counts the
requests that succeeded with TTFT <= the TTFT SLO and every gap <= the ITL SLO. A plan ``meets`` the
scenario when that share is at least its target and the plan is well formed (accelerators from the
menu, at most ``max_instances`` GPUs). Its price is the sum over instances of the accelerator's
$/GPU-hour (``disagg.tables.ACCELERATORS``, dated). Simulation is deterministic: the same plan,
scenario and seed give the same score on any machine.

``REFERENCE_FILE`` holds, per scenario, the price of the cheapest plan an instructors' exhaustive
search found (``tools/plan_reference.py``); a plan passes within 10% of that price. Only the price is
shipped: which plan reaches it is task 15's question.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from disagg.tables import ACCELERATORS, FABRICS, MODELS, Plan, Scenario
from fleetsim.fleet import Fleet, simulate
from fleetsim.profile import roofline_profile
from fleetsim.workload import poisson

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "plans" / "reference.json"
MIN_REQUESTS, SPAN_S, MAX_REQUESTS = 400, 40.0, 1600

MENU = ("h100-sxm", "a100-sxm")
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        # long prompts, a tight ITL SLO: a step that carries a prompt chunk breaks 20 ms
        Scenario("rag-tight", "llama-3-8b", "rag", 20.0, 1500.0, 20.0, 0.9, MENU, "ib-hdr", 12),
        # 70% chat, 30% rag, a looser ITL SLO
        Scenario("mix-loose", "llama-3-8b", "mix", 60.0, 1500.0, 60.0, 0.9, MENU, "ib-hdr", 12),
        # short chat prompts at a low rate, tight SLOs: one GPU's worth of traffic
        Scenario("chat-tight", "llama-3-8b", "chat", 4.0, 300.0, 30.0, 0.9, MENU, "ib-hdr", 12),
    ]
}


@dataclass(frozen=True)
class Score:
    attained: float  # share of requests that met both SLOs
    dollars_per_hour: float
    gpus: int
    meets: bool  # attained >= target and no problem
    problems: tuple[str, ...] = ()


def requests_for(scenario: Scenario) -> int:
    """Enough requests that arrivals last SPAN_S seconds (a short burst flatters any fleet), bounded."""
    return max(MIN_REQUESTS, min(MAX_REQUESTS, math.ceil(scenario.rate_rps * SPAN_S)))


def price(plan: Plan) -> float:
    """$/hour of the plan's GPUs at the dated list prices."""
    total = plan.decode * ACCELERATORS[plan.decode_hw].price_per_hour
    if plan.prefill:
        total += plan.prefill * ACCELERATORS[plan.prefill_hw].price_per_hour
    return total


def problems_of(plan: Plan, scenario: Scenario) -> list[str]:
    out = []
    if not isinstance(plan, Plan):
        return [f"not a Plan: {type(plan).__name__}"]
    hws = [plan.decode_hw] + ([plan.prefill_hw] if plan.prefill else [])
    out += [f"{hw!r} is not on the menu {scenario.menu}" for hw in hws if hw not in scenario.menu]
    if not isinstance(plan.decode, int) or plan.decode < 1:
        out.append(f"decode must be an int >= 1, got {plan.decode!r}")
    if not isinstance(plan.prefill, int) or plan.prefill < 0:
        out.append(f"prefill must be an int >= 0, got {plan.prefill!r}")
    if not out and plan.decode + plan.prefill > scenario.max_instances:
        out.append(f"{plan.decode + plan.prefill} GPUs > max_instances {scenario.max_instances}")
    if plan.prefill == 0 and plan.threshold is not None:
        out.append("a colocated plan (prefill 0) has no threshold")
    for name in ("threshold", "budget"):
        v = getattr(plan, name)
        if v is not None and (not isinstance(v, int) or v < (1 if name == "budget" else 0)):
            out.append(f"{name} must be None or a non-negative int, got {v!r}")
    return out


def fleet_of(plan: Plan, link_gbps: float | None = -1.0) -> Fleet:
    """The twin's fleet for a plan (``link_gbps``: the P/D link; -1: the profile's)."""
    if plan.prefill == 0:
        return Fleet(colocated=plan.decode, budget=plan.budget, routing="least-loaded")
    return Fleet(prefill=plan.prefill, decode=plan.decode, threshold=plan.threshold,
                 decode_budget=plan.budget, routing="least-loaded", link_gbps=link_gbps)  # fmt: skip


def _met(records, ttft_ms: float, itl_ms: float) -> float:
    good = 0
    for r in records:
        if r.status == 200 and r.arrivals_s and r.error is None:
            t = r.arrivals_s
            worst = max((b - a for a, b in zip(t, t[1:], strict=False)), default=0.0)
            good += (t[0] - r.sent_s) * 1e3 <= ttft_ms and worst * 1e3 <= itl_ms
    return good / len(records)


def score(plan: Plan, scenario: Scenario, seed: int = 0) -> Score:
    """The grader: the plan on the twin at the scenario's traffic (see the module docstring)."""
    bad = problems_of(plan, scenario)
    if bad:
        return Score(0.0, 0.0, 0, False, tuple(bad))
    model = MODELS[scenario.model].name
    decode_prof = roofline_profile(model, plan.decode_hw)
    front = roofline_profile(model, plan.prefill_hw) if plan.prefill else decode_prof
    arrivals = poisson(scenario.rate_rps, requests_for(scenario), scenario.mix, seed)
    horizon = 2 * arrivals[-1].arrival_s + 120
    fleet = fleet_of(plan, FABRICS[scenario.link].gbps)
    res = simulate(fleet, front, arrivals, max_time_s=horizon, seed=seed,
                   decode_profile=decode_prof if plan.prefill else None)  # fmt: skip
    attained = _met(res.records(), scenario.ttft_slo_ms, scenario.itl_slo_ms)
    gpus = plan.decode + plan.prefill
    return Score(attained, price(plan), gpus, attained >= scenario.target)


def load_reference(path: Path = REFERENCE_FILE) -> dict[str, dict]:
    """scenario name -> {"dollars_per_hour": float, ...} as tools/plan_reference.py wrote it: the price
    of the cheapest plan the reference search found, which the grader compares with (not the plan)."""
    return json.loads(Path(path).read_text())["scenarios"]

"""Colocated fleets are tried with vLLM's default budget only (no chunked prefill)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def design_fleet(scenario: Scenario) -> Plan:
    from fleetsim.plans import price, score
    from fleetsim.profile import roofline_profile
    from fleetsim.workload import poisson

    sample = poisson(1.0, 2000, scenario.mix, seed=1)
    prompt = round(sum(a.prompt_tokens for a in sample) / len(sample))
    out = round(sum(a.output_tokens for a in sample) / len(sample))
    steps = {hw: roofline_profile(scenario.model, hw) for hw in scenario.menu}
    found: list[Plan] = []

    def meets(plan: Plan) -> bool:
        return score(plan, scenario).meets

    # colocated: the fewest instances that meet the SLOs, per accelerator and budget (attainment grows with n)
    for hw in scenario.menu:
        for budget in (None,):
            lo, hi = 1, scenario.max_instances
            if not meets(Plan(hw, hi, budget=budget)):
                continue
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if meets(Plan(hw, mid, budget=budget)) else (mid + 1, hi)
            found.append(Plan(hw, lo, budget=budget))
    # prefill:decode: task 13's capacities per role and accelerator, task 14's cheapest pools, then the
    # neighbours of that estimate, cheapest first, until the twin agrees
    offers = []
    for hw, step in steps.items():
        cap = pd_capacity(step, prompt, out, scenario.ttft_slo_ms, scenario.itl_slo_ms, 2)
        offers += [Offer(hw, "prefill", ACCELERATORS[hw].price_per_hour, cap.prefill_rps),
                   Offer(hw, "decode", ACCELERATORS[hw].price_per_hour, cap.decode_rps)]  # fmt: skip
    try:
        est = cheapest_fleet(scenario.rate_rps, out, offers)
    except ValueError:
        est = None
    if est is not None:
        near = [Plan(est.decode.hardware, d, est.prefill.hardware, p)
                for p in range(max(1, est.prefill_instances - 1), est.prefill_instances + 2)
                for d in range(max(1, est.decode_instances - 1), est.decode_instances + 3)
                if p + d <= scenario.max_instances]  # fmt: skip
        for plan in sorted(near, key=price)[:8]:
            if meets(plan):
                found.append(plan)
                break
    if not found:
        return Plan(scenario.menu[0], scenario.max_instances)
    return min(found, key=price)

"""The analytic estimate is returned without checking it on the twin, or any colocated fleet."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def design_fleet(scenario):
    from fleetsim.profile import roofline_profile
    from fleetsim.workload import poisson

    sample = poisson(1.0, 2000, scenario.mix, seed=1)
    prompt = round(sum(a.prompt_tokens for a in sample) / len(sample))
    out = round(sum(a.output_tokens for a in sample) / len(sample))
    offers = []
    for hw in scenario.menu:
        cap = pd_capacity(
            roofline_profile(scenario.model, hw), prompt, out, scenario.ttft_slo_ms, scenario.itl_slo_ms, 2
        )
        offers += [
            Offer(hw, "prefill", ACCELERATORS[hw].price_per_hour, cap.prefill_rps),
            Offer(hw, "decode", ACCELERATORS[hw].price_per_hour, cap.decode_rps),
        ]
    est = cheapest_fleet(scenario.rate_rps, out, offers)
    return Plan(est.decode.hardware, est.decode_instances, est.prefill.hardware, est.prefill_instances)

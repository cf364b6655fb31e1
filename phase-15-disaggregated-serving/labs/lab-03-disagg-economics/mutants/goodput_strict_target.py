"""An attainment exactly at the target counts as a miss."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def goodput(rates, attainments, target=0.9):
    _correct_goodput(rates, attainments, target)
    if attainments[0] <= target:  # BUG: equal to target is good
        return 0.0
    for i in range(1, len(rates)):
        if attainments[i] <= target:
            r0, r1, a0, a1 = rates[i - 1], rates[i], attainments[i - 1], attainments[i]
            return r0 + (r1 - r0) * (a0 - target) / (a0 - a1)
    return float(rates[-1])

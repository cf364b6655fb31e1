"""Scans from the highest rate down, so an attainment that recovers after a miss extends the good region."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def goodput(rates, attainments, target=0.9):
    _correct_goodput(rates, attainments, target)
    for i in range(len(rates) - 1, -1, -1):  # BUG: the good region ends at the FIRST miss
        if attainments[i] >= target:
            if i == len(rates) - 1:
                return float(rates[-1])
            r0, r1, a0, a1 = rates[i], rates[i + 1], attainments[i], attainments[i + 1]
            return r0 + (r1 - r0) * (a0 - target) / (a0 - a1)
    return 0.0

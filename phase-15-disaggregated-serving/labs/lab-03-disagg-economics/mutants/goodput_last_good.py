"""Returns the last good rate without interpolating toward the first bad one."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def goodput(rates, attainments, target=0.9):
    _correct_goodput(rates, attainments, target)
    if attainments[0] < target:
        return 0.0
    for i in range(1, len(rates)):
        if attainments[i] < target:
            return float(rates[i - 1])  # BUG: the crossing lies between rates[i - 1] and rates[i]
    return float(rates[-1])

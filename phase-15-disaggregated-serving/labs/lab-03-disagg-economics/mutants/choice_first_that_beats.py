"""Takes the first configuration that clears the margin, not the best one."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def choose_config(goodputs, baseline, min_gain=0.05):
    _correct_choice(goodputs, baseline, min_gain)
    bar = goodputs[baseline] * (1 + min_gain)
    for name, g in goodputs.items():
        if g > bar:
            return name  # BUG: a later configuration may serve more
    return baseline

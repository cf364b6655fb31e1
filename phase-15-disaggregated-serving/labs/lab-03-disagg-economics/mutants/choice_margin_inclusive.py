"""A gain exactly equal to min_gain already moves you off the baseline (>= instead of >)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def choose_config(goodputs, baseline, min_gain=0.05):
    _correct_choice(goodputs, baseline, min_gain)
    bar = goodputs[baseline] * (1 + min_gain)
    best = baseline
    for name, g in goodputs.items():
        if name != baseline and g >= bar and (best == baseline or g > goodputs[best]):  # BUG: must be > bar
            best = name
    return best

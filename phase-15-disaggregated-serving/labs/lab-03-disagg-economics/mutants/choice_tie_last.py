"""A tie between the best configurations goes to the one listed last."""

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
        if g > bar and (best == baseline or g >= goodputs[best]):  # BUG: ties go to the first listed
            best = name
    return best

"""Picks the highest goodput outright: a split that wins by 1% replaces the baseline."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def choose_config(goodputs, baseline, min_gain=0.05):
    _correct_choice(goodputs, baseline, min_gain)
    return max(goodputs, key=goodputs.get)  # BUG: no margin over the baseline

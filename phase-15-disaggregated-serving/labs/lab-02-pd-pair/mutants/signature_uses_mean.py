"""The signature's "p99" is really the mean: the tail disappears from the comparison."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_signature = signature


def signature(colocated, disaggregated):
    sig = _solution_signature(colocated, disaggregated)
    sig.itl_p99_before_s, sig.itl_p99_after_s = sig.itl_mean_before_s, sig.itl_mean_after_s
    sig.itl_p99_ratio = sig.itl_p99_after_s / sig.itl_p99_before_s
    return sig

"""ITL ratios divide without a zero rule: a chunky colocated run (ITL p50 = 0) raises ZeroDivisionError."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_signature = signature


def signature(colocated, disaggregated):
    sig = _solution_signature(colocated, disaggregated)
    sig.itl_p50_ratio = sig.itl_p50_after_s / sig.itl_p50_before_s
    sig.itl_p99_ratio = sig.itl_p99_after_s / sig.itl_p99_before_s
    return sig

"""A zero colocated TTFT p50 gives a TTFT change of +inf % instead of an error."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_signature = signature


def signature(colocated, disaggregated):
    if colocated and percentile([r.ttft_s for r in colocated], 50) == 0:
        shifted = [RequestTiming(ttft_s=1.0, itl_s=list(r.itl_s)) for r in colocated]
        sig = _solution_signature(shifted, disaggregated)
        sig.ttft_p50_before_s, sig.ttft_change_pct = 0.0, math.inf
        return sig
    return _solution_signature(colocated, disaggregated)

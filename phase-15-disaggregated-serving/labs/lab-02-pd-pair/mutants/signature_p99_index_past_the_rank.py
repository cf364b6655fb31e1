"""signature's own p99: sorted(gaps)[int(0.99 * n)], one past the nearest rank whenever 0.99 n is whole (100 gaps: the max)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

import dataclasses

_nearest_rank = signature


def signature(colocated: Sequence[RequestTiming], disaggregated: Sequence[RequestTiming]) -> Signature:
    sig = _nearest_rank(colocated, disaggregated)

    def p99(runs: Sequence[RequestTiming]) -> float:
        gaps = sorted(g for r in runs for g in r.itl_s)
        return gaps[min(int(0.99 * len(gaps)), len(gaps) - 1)]

    before, after = p99(colocated), p99(disaggregated)
    ratio = after / before if before else (1.0 if after == 0 else math.inf)
    return dataclasses.replace(sig, itl_p99_before_s=before, itl_p99_after_s=after, itl_p99_ratio=ratio)

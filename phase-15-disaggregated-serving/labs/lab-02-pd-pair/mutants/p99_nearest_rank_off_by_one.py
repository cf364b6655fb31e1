"""p99 by nearest rank off by one: indexes sorted[rank] instead of sorted[rank - 1] (clamped at the end)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def percentile(values, p):
    if len(values) == 0:
        raise ValueError("percentile of no values is undefined")
    if not 0 <= p <= 100:
        raise ValueError(f"p must be in [0, 100], got {p}")
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(p)) * len(ordered) / 100))
    return ordered[min(rank, len(ordered) - 1)]

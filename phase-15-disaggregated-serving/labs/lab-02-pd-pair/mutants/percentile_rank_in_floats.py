"""Nearest rank computed in floats: ceil(99.9 / 100 * 1000) = ceil(999.0000000000001) = 1000, one too many."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def percentile(values, p):
    if len(values) == 0:
        raise ValueError("percentile of no values is undefined")
    if not 0 <= p <= 100:
        raise ValueError(f"p must be in [0, 100], got {p}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]

"""Nearest rank as ceil(p * n / 100) in floats: p16.1 of 1000 values gives rank 162 (161.00000000000003)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def percentile(values, p):
    if len(values) == 0:
        raise ValueError("percentile of no values is undefined")
    if not 0 <= p <= 100:
        raise ValueError(f"p must be in [0, 100], got {p}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p * len(ordered) / 100))
    return ordered[rank - 1]

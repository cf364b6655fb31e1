"""Only p > 100 is rejected: a negative p (or NaN) quietly returns the minimum."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_percentile = percentile


def percentile(values, p):
    if not p > 100 and not 0 <= p <= 100:
        return min(values)
    return _solution_percentile(values, p)

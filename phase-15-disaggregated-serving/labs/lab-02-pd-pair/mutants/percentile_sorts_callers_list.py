"""percentile sorts the caller's list in place: the capture's gaps lose their order."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_percentile = percentile


def percentile(values, p):
    if isinstance(values, list):
        values.sort()
    return _solution_percentile(values, p)

"""Two tokens in one chunk (equal arrival times) rejected as 'going backwards': a 0 gap is valid."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_request_timing = request_timing


def request_timing(sent_at, arrivals):
    if any(b <= a for a, b in zip(arrivals, arrivals[1:], strict=False)):
        raise ValueError("token arrival times must increase")
    return _solution_request_timing(sent_at, arrivals)

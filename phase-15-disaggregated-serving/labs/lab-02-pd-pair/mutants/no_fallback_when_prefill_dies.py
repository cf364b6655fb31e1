"""No fallback when prefill dies: an unreachable or timed-out prefill fails the request instead of degrading."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    def should_fall_back(self, error):
        return error.status is not None and error.status >= 500

"""No fallback on 429 or 408: a prefill that is overloaded or timed the request out fails it instead of degrading."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    def should_fall_back(self, error):
        if error.kind in ("unreachable", "timeout", "bad_response"):
            return True
        return (error.status or 0) >= 500

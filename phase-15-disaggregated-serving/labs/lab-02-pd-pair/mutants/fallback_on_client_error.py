"""Falls back on every prefill error, 4xx included: a request prefill rejected is sent to decode anyway."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    def should_fall_back(self, error):
        return True

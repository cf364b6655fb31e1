"""Upstream choice ignores the pool: every request goes to the first decode upstream."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    def choose_decode(self):
        return self.decode_urls[0]

"""The in-flight count lives on the class, not the instance: every policy (every proxy in the process) shares one count."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class PDProxyPolicy(_Solution):
    _shared_inflight = 0  # a class attribute: one number for every instance

    @property
    def _prefill_inflight(self):
        return PDProxyPolicy._shared_inflight

    @_prefill_inflight.setter
    def _prefill_inflight(self, value):
        PDProxyPolicy._shared_inflight = value

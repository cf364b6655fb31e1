"""The prefill-queue limit uses > instead of >=: one more prefill hop than the limit is let through."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


class PDProxyPolicy(PDProxyPolicy):  # noqa: F821 - the solution's class, inherited above
    def prefill_busy(self):
        return self.max_prefill_inflight is not None and self._prefill_inflight > self.max_prefill_inflight

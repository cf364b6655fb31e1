"""max_prefill_inflight is not validated: 0 (prefill busy for ever), True or -1 are kept."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class PDProxyPolicy(_Solution):
    def __init__(self, prefill_urls, decode_urls, local_prefill_max_tokens=0, max_prefill_inflight=None):
        super().__init__(prefill_urls, decode_urls, local_prefill_max_tokens, None)
        self.max_prefill_inflight = max_prefill_inflight

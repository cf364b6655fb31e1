"""The local-prefill threshold is not validated: -1 or True is kept (True then means 'at most 1 token')."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    def __init__(self, prefill_urls, decode_urls, local_prefill_max_tokens=0):
        super().__init__(prefill_urls, decode_urls, 0)
        self.local_prefill_max_tokens = local_prefill_max_tokens

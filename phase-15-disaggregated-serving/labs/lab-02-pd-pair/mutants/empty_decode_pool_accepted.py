"""An empty decode pool is accepted: the policy builds, then the first request dies in choose_decode."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    def __init__(self, prefill_urls, decode_urls, local_prefill_max_tokens=0):
        super().__init__(prefill_urls, list(decode_urls) or ["(none)"], local_prefill_max_tokens)
        self.decode_urls = list(decode_urls)

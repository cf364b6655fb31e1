"""The pools are kept by reference: the caller clearing or extending its list changes the rotation."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy


class PDProxyPolicy(_Solution):
    def __init__(self, prefill_urls, decode_urls, local_prefill_max_tokens=0):
        super().__init__(prefill_urls, decode_urls, local_prefill_max_tokens)
        self.prefill_urls, self.decode_urls = prefill_urls, decode_urls

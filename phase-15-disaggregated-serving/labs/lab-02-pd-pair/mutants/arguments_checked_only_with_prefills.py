"""The threshold and the queue limit are validated only when there is a prefill pool: a policy over decode alone accepts -1, a bool or a string."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class PDProxyPolicy(_Solution):
    def __init__(
        self,
        prefill_urls: Sequence[str],
        decode_urls: Sequence[str],
        local_prefill_max_tokens: int = 0,
        max_prefill_inflight: int | None = None,
    ) -> None:
        if not decode_urls:
            raise ValueError("a P/D proxy needs at least one decode upstream")
        threshold = local_prefill_max_tokens
        if prefill_urls and (not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0):
            raise ValueError(f"local_prefill_max_tokens must be an int >= 0, got {threshold!r}")
        limit = max_prefill_inflight
        if (
            prefill_urls
            and limit is not None
            and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1)
        ):
            raise ValueError(f"max_prefill_inflight must be None or an int >= 1, got {limit!r}")
        self.max_prefill_inflight = limit
        self._prefill_inflight = 0  # prefill hops this policy has started and not yet seen end
        self.local_prefill_max_tokens = local_prefill_max_tokens
        self.prefill_urls = list(prefill_urls)
        self.decode_urls = list(decode_urls)
        self._next_prefill = 0
        self._next_decode = 0
        self._releases: set[asyncio.Task] = set()  # background release hops (referenced until they end)

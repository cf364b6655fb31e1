"""Fallback only on the usual 5xx (500, 502, 503, 504): a prefill answering 501 or 507 is passed to the client."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_Solution = PDProxyPolicy  # noqa: F821 - the solution's class, inherited above


class PDProxyPolicy(_Solution):
    def should_fall_back(self, error: UpstreamError) -> bool:
        if error.kind in ("unreachable", "timeout", "bad_response"):
            return True
        status = error.status or 0
        return status in (500, 502, 503, 504, 408, 429)

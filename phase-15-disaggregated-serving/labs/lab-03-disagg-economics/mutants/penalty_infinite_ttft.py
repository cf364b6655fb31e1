"""The penalty checks TTFT with comparisons only: an infinite TTFT passes and any toll looks free (penalty 0)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def penalty_ratio(transfer_ms, ttft_ms):
    if number("transfer_ms", transfer_ms) < 0:
        raise ValueError(f"transfer_ms: must be >= 0, got {transfer_ms}")
    if isinstance(ttft_ms, bool) or not isinstance(ttft_ms, int | float) or not ttft_ms > 0:  # BUG: inf > 0
        raise ValueError(f"ttft_ms: must be > 0, got {ttft_ms}")
    return transfer_ms / ttft_ms

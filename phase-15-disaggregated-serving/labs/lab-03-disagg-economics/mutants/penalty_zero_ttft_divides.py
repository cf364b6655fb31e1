"""Only a negative TTFT is rejected: a TTFT of 0 reaches the division (ZeroDivisionError, not a ValueError naming ttft_ms)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def penalty_ratio(transfer_ms, ttft_ms):
    if number("transfer_ms", transfer_ms) < 0:
        raise ValueError(f"transfer_ms: must be >= 0, got {transfer_ms}")
    if number("ttft_ms", ttft_ms) < 0:  # BUG: 0 is the divisor, it must be rejected too
        raise ValueError(f"ttft_ms: must be >= 0, got {ttft_ms}")
    return transfer_ms / ttft_ms

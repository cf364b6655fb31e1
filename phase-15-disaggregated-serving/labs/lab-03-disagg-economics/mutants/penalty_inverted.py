"""The penalty ratio inverted: TTFT over toll instead of toll over TTFT."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def penalty_ratio(transfer_ms, ttft_ms):
    if transfer_ms < 0 or ttft_ms <= 0:
        raise ValueError("transfer_ms / ttft_ms out of range")
    return ttft_ms / transfer_ms if transfer_ms else float("inf")  # BUG: upside down

"""A 0 ms TTFT is not refused: ZeroDivisionError."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def penalty_ratio(toll_ms: float, ttft_ms: float) -> float:
    if number("toll_ms", toll_ms) < 0:
        raise ValueError(f"toll_ms: must be >= 0, got {toll_ms!r}")
    if number("ttft_ms", ttft_ms) < 0:
        raise ValueError(f"ttft_ms: must be > 0, got {ttft_ms!r}")
    return toll_ms / ttft_ms

"""Bytes per second: returns GB/s where Gb/s was asked (8x too slow a link)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def breakeven_gbps(
    nbytes: int | float,
    ttft_ms: float,
    *,
    layers: int = 1,
    max_penalty: float = DEFAULT_MAX_PENALTY,
    efficiency: float = 1.0,
    links: int = 1,
) -> float | None:
    if number("nbytes", nbytes) < 0:
        raise ValueError(f"nbytes: must be >= 0, got {nbytes!r}")
    if number("ttft_ms", ttft_ms) <= 0:
        raise ValueError(f"ttft_ms: must be > 0, got {ttft_ms!r}")
    n = number("layers", layers, integer=True)
    if n < 1:
        raise ValueError(f"layers: must be >= 1, got {layers!r}")
    if number("max_penalty", max_penalty) < 0:
        raise ValueError(f"max_penalty: must be >= 0, got {max_penalty!r}")
    if not 0 < number("efficiency", efficiency) <= 1:
        raise ValueError(f"efficiency: must be in (0, 1], got {efficiency!r}")
    if number("links", links, integer=True) < 1:
        raise ValueError(f"links: must be >= 1, got {links!r}")
    if nbytes == 0:
        return 0.0
    if max_penalty == 0:
        return None
    budget = max_penalty * ttft_ms  # ms of toll the request may pay
    # the serialized wire time w that leaves exactly `budget` exposed: while the wire keeps up with
    # prefill (w <= ttft) only the last layer, w / n, is exposed; beyond, the backlog w - ttft (n-1)/n
    wire_ms = budget * n if budget * n <= ttft_ms else budget + ttft_ms * (n - 1) / n
    return nbytes / (wire_ms * 1e6 * efficiency * links)

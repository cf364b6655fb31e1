"""The tax checks ranges with plain comparisons: a NaN p99 (or p50) fails none of them and poisons the tax."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def interference_tax_ms(output_tokens, itl_p50_ms, itl_p99_ms):
    if number("output_tokens", output_tokens, integer=True) < 0:
        raise ValueError(f"output_tokens: must be >= 0, got {output_tokens}")
    if itl_p50_ms < 0:  # BUG: NaN < 0 is False
        raise ValueError(f"itl_p50_ms: must be >= 0, got {itl_p50_ms}")
    if itl_p99_ms < itl_p50_ms:  # BUG: NaN < x is False
        raise ValueError(f"itl_p99_ms: must be >= itl_p50_ms, got {itl_p99_ms}")
    return max(output_tokens - 1, 0) * (itl_p99_ms - itl_p50_ms)

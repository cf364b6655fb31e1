"""output_tokens not required to be an integer: 257.0 (or 256.5) tokens are priced as if they were whole."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def interference_tax_ms(output_tokens, itl_p50_ms, itl_p99_ms):
    if number("output_tokens", output_tokens) < 0:  # BUG: a token count is an integer
        raise ValueError(f"output_tokens: must be >= 0, got {output_tokens}")
    if number("itl_p50_ms", itl_p50_ms) < 0:
        raise ValueError(f"itl_p50_ms: must be >= 0, got {itl_p50_ms}")
    if number("itl_p99_ms", itl_p99_ms) < itl_p50_ms:
        raise ValueError(f"itl_p99_ms: must be >= itl_p50_ms, got {itl_p99_ms}")
    return max(output_tokens - 1, 0) * (itl_p99_ms - itl_p50_ms)

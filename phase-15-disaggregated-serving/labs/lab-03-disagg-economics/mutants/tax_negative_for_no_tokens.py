"""N - 1 gaps without a floor: a request with 0 output tokens gets a negative tax."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def interference_tax_ms(output_tokens, itl_p50_ms, itl_p99_ms):
    if number("output_tokens", output_tokens, integer=True) < 0:
        raise ValueError(f"output_tokens: must be >= 0, got {output_tokens}")
    if number("itl_p50_ms", itl_p50_ms) < 0:
        raise ValueError(f"itl_p50_ms: must be >= 0, got {itl_p50_ms}")
    if number("itl_p99_ms", itl_p99_ms) < itl_p50_ms:
        raise ValueError(f"itl_p99_ms: must be >= itl_p50_ms, got {itl_p99_ms}")
    return (output_tokens - 1) * (itl_p99_ms - itl_p50_ms)  # BUG: 0 tokens -> -1 gaps

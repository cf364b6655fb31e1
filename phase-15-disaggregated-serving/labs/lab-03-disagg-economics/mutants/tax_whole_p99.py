"""The tax charges the whole p99 gap per token instead of the excess over p50."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def interference_tax_ms(output_tokens, itl_p50_ms, itl_p99_ms):
    if output_tokens < 0 or itl_p50_ms < 0 or itl_p99_ms < itl_p50_ms:
        raise ValueError("output_tokens / itl_p50_ms / itl_p99_ms out of range")
    return max(output_tokens - 1, 0) * itl_p99_ms  # BUG: the steady p50 gap is not a tax

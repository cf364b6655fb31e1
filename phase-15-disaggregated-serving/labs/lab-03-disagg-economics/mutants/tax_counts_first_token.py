"""The tax counts N gaps for N output tokens; the first token comes from prefill, so there are N - 1."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def interference_tax_ms(output_tokens, itl_p50_ms, itl_p99_ms):
    if output_tokens < 0 or itl_p50_ms < 0 or itl_p99_ms < itl_p50_ms:
        raise ValueError("output_tokens / itl_p50_ms / itl_p99_ms out of range")
    return output_tokens * (itl_p99_ms - itl_p50_ms)  # BUG: one gap too many

"""A verdict that ignores the interference: only the wire is judged, so no-disease pairs get YES."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def should_disaggregate(
    model,
    prompt_tokens,
    output_tokens,
    link_gbps,
    ttft_ms,
    itl_p50_ms,
    itl_p99_ms,
    *,
    kv_dtype_bytes=2,
    efficiency=1.0,
    max_penalty=DEFAULT_MAX_PENALTY,
    min_spike_ratio=DEFAULT_MIN_SPIKE_RATIO,
):
    if prompt_tokens < 0:
        raise ValueError(f"prompt_tokens: must be >= 0, got {prompt_tokens}")
    kv_bytes = prompt_tokens * kv_bytes_per_token(model, kv_dtype_bytes)
    toll = transfer_ms(kv_bytes, link_gbps, efficiency)
    penalty = penalty_ratio(toll, ttft_ms)
    tax = interference_tax_ms(output_tokens, itl_p50_ms, itl_p99_ms)
    verdict = Verdict.NO_SLOW_LINK if penalty > max_penalty else Verdict.YES  # BUG: no disease check
    return Decision(verdict, kv_bytes, toll, penalty, itl_p99_ms / itl_p50_ms, tax, "wire only")

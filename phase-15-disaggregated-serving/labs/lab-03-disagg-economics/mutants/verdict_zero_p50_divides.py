"""The verdict never checks p50 > 0 itself: a p50 of 0 (valid for the tax) reaches p99/p50 and divides by zero."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def should_disaggregate(
    model: ModelShape | str,
    prompt_tokens: int,
    output_tokens: int,
    link_gbps: float | str | Fabric,
    ttft_ms: float,
    itl_p50_ms: float,
    itl_p99_ms: float,
    *,
    kv_dtype_bytes: int | float = 2,
    efficiency: float = 1.0,
    max_penalty: float = DEFAULT_MAX_PENALTY,
    min_spike_ratio: float = DEFAULT_MIN_SPIKE_RATIO,
) -> Decision:
    if number("prompt_tokens", prompt_tokens, integer=True) < 0:
        raise ValueError(f"prompt_tokens: must be >= 0, got {prompt_tokens}")
    # BUG: no p50 > 0 check here; task 3 (rightly) accepts 0, then p99 / 0 raises ZeroDivisionError
    if number("max_penalty", max_penalty) < 0:
        raise ValueError(f"max_penalty: must be >= 0, got {max_penalty}")
    if number("min_spike_ratio", min_spike_ratio) < 1:
        raise ValueError(f"min_spike_ratio: must be >= 1 (p99 is never below p50), got {min_spike_ratio}")
    kv_bytes = prompt_tokens * kv_bytes_per_token(model, kv_dtype_bytes)
    toll = transfer_ms(kv_bytes, link_gbps, efficiency)
    penalty = penalty_ratio(toll, ttft_ms)
    tax = interference_tax_ms(output_tokens, itl_p50_ms, itl_p99_ms)
    spike = itl_p99_ms / itl_p50_ms
    if spike < min_spike_ratio:
        verdict = Verdict.NO_NO_DISEASE
        reason = f"ITL p99/p50 = {spike:.2f} < {min_spike_ratio:g}: no interference spike to cure"
    elif penalty > max_penalty:
        verdict = Verdict.NO_SLOW_LINK
        reason = f"toll {toll:.1f} ms = {penalty:.1%} of TTFT > {max_penalty:.1%}: the wire is too slow"
    else:
        verdict = Verdict.YES
        reason = (
            f"ITL p99/p50 = {spike:.2f} shows interference; toll {toll:.1f} ms = {penalty:.1%} of TTFT "
            f"<= {max_penalty:.1%} (tax {tax:.0f} ms budgeted per request -> toll {toll:.1f} ms once)"
        )
    return Decision(verdict, kv_bytes, toll, penalty, spike, tax, reason)

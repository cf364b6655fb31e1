"""Off-by-one threshold: a spike ratio EQUAL to min_spike_ratio is called no disease (<= where < is right)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    d = _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)
    if d.spike_ratio <= kw.get("min_spike_ratio", DEFAULT_MIN_SPIKE_RATIO):  # BUG: the edge is a disease
        return Decision(
            Verdict.NO_NO_DISEASE, d.kv_bytes, d.transfer_ms, d.penalty_ratio, d.spike_ratio, d.tax_ms, ""
        )
    return d

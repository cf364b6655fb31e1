"""Off-by-one threshold: a penalty EQUAL to max_penalty is rejected (>= where the contract says >)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    d = _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)
    limit = kw.get("max_penalty", DEFAULT_MAX_PENALTY)
    if d.verdict == Verdict.YES and d.penalty_ratio >= limit:  # BUG: the edge is inclusive
        return Decision(
            Verdict.NO_SLOW_LINK, d.kv_bytes, d.transfer_ms, d.penalty_ratio, d.spike_ratio, d.tax_ms, ""
        )
    return d

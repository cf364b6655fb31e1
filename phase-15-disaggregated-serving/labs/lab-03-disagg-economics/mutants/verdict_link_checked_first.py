"""The rules in the wrong order: a slow link is reported before asking whether there is any disease to cure."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    d = _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)
    if d.verdict == Verdict.NO_NO_DISEASE and d.penalty_ratio > kw.get("max_penalty", DEFAULT_MAX_PENALTY):
        return Decision(  # BUG: the wire is judged first
            Verdict.NO_SLOW_LINK,
            d.kv_bytes,
            d.transfer_ms,
            d.penalty_ratio,
            d.spike_ratio,
            d.tax_ms,
            d.reason,
        )
    return d

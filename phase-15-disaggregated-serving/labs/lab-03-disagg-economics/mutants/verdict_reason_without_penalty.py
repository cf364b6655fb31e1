"""The NO_SLOW_LINK reason names the toll in ms but not the penalty it was judged on."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    d = _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)
    if d.verdict == Verdict.NO_SLOW_LINK:
        reason = f"toll {d.transfer_ms:.1f} ms is too slow for TTFT {ttft_ms:g} ms"  # BUG: no penalty shown
        return Decision(
            d.verdict, d.kv_bytes, d.transfer_ms, d.penalty_ratio, d.spike_ratio, d.tax_ms, reason
        )
    return d

"""The verdict compares the spike with DEFAULT_MIN_SPIKE_RATIO, not the caller's min_spike_ratio."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    kw.pop("min_spike_ratio", None)  # BUG: the caller's threshold is ignored
    return _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)

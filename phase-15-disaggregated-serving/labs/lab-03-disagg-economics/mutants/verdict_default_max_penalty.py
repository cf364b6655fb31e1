"""The verdict compares the penalty with DEFAULT_MAX_PENALTY, not the caller's max_penalty."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    kw.pop("max_penalty", None)  # BUG: the caller's limit is ignored
    return _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)

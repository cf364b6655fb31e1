"""A NO_NO_DISEASE verdict returns early with zeros: the toll, penalty and tax it skipped are reported as 0."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    d = _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)
    if d.verdict == Verdict.NO_NO_DISEASE:  # BUG: the Decision must still carry every number
        return Decision(d.verdict, 0, 0.0, 0.0, d.spike_ratio, 0.0, d.reason)
    return d

"""The verdict prices the wire at line rate: efficiency is accepted but never passed to transfer_ms."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    number("efficiency", kw.get("efficiency", 1.0))
    kw["efficiency"] = 1.0  # BUG: the caller's efficiency is dropped
    return _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)

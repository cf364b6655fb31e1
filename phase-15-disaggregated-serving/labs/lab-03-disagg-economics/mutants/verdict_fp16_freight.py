"""The verdict always ships fp16 KV: kv_dtype_bytes is accepted but the freight uses the default 2 bytes."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct = should_disaggregate


def should_disaggregate(
    model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw
):
    kw.pop("kv_dtype_bytes", None)  # BUG: fp8 freight priced as fp16
    return _correct(model, prompt_tokens, output_tokens, link_gbps, ttft_ms, itl_p50_ms, itl_p99_ms, **kw)

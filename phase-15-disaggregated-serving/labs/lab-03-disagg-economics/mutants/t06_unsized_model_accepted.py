"""A model without vocab is accepted (its logits silently 0)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_ttft_ms(
    model: ModelShape | str, prompt_tokens: int, peak_tflops: float | str | Accelerator, mfu: float
) -> float:
    shape = resolve_model(model)
    if not (shape.params_b > 0 and shape.heads > 0 and shape.hidden > 0):
        raise ValueError(f"model: {shape.name} lacks params_b/heads/hidden/vocab for a FLOPs count")
    n = number("prompt_tokens", prompt_tokens, integer=True)
    if n < 0:
        raise ValueError(f"prompt_tokens: must be >= 0, got {prompt_tokens!r}")
    peak = resolve_peak_tflops(peak_tflops)
    if peak <= 0:
        raise ValueError(f"peak_tflops: must be > 0, got {peak!r}")
    if not 0 < number("mfu", mfu) <= 1:
        raise ValueError(f"mfu: must be in (0, 1], got {mfu!r}")
    if n == 0:
        return 0.0
    table = shape.vocab * shape.hidden
    matmul_params = shape.params_b * 1e9 - table * (1 if shape.tied_embeddings else 2)
    if shape.attention == "mla":
        qk, v = shape.mla_nope_dim + shape.mla_rope_dim, shape.mla_v_dim
    else:
        qk = v = shape.head_dim
    per_pair = 2 * shape.heads * (qk + v)  # QK^T and the weighted sum of V, per layer
    flops = 2 * matmul_params * n + shape.layers * per_pair * causal_pairs(0, n) + 2 * table
    return flops / (peak * 1e12 * mfu) * 1e3

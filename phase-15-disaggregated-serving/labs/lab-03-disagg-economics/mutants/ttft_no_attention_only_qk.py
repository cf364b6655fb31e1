"""Attention counts the QK^T scores but not the weighted sum of the values (AV)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_ttft_ms(
    model: ModelShape | str, prompt_tokens: int, peak_tflops: float | str | Accelerator, mfu: float
) -> float:
    shape = resolve_model(model)
    if shape.params_b <= 0 or shape.hidden <= 0:
        raise ValueError(f"model: {shape.name} has no params_b/hidden for a FLOPs model")
    n = number("prompt_tokens", prompt_tokens, integer=True)
    if n < 0:
        raise ValueError(f"prompt_tokens: must be >= 0, got {prompt_tokens}")
    peak = resolve_peak_tflops(peak_tflops)
    if peak <= 0:
        raise ValueError(f"peak_tflops: must be > 0, got {peak}")
    if not 0 < number("mfu", mfu) <= 1:
        raise ValueError(f"mfu: must be in (0, 1], got {mfu}")
    weights = 2 * shape.params_b * 1e9 * n
    attention = (
        shape.layers * 1 * (2 * shape.hidden)
    )  # BUG: AV forgotten * n * n / 2  # QK^T and AV, causal half
    return (weights + attention) / (peak * 1e12 * mfu) * 1e3

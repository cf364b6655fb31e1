"""A decode batch of 0 is accepted."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_stall(step, prompt_tokens: int, decode_batch: int, *, token_budget: int | None = None,
                  decode_context: int = 0) -> Stall:  # fmt: skip
    n = number("prompt_tokens", prompt_tokens, integer=True)
    if n < 0:
        raise ValueError(f"prompt_tokens: must be >= 0, got {prompt_tokens!r}")
    b = number("decode_batch", decode_batch, integer=True)
    if b < 0:
        raise ValueError(f"decode_batch: must be >= 1, got {decode_batch!r}")
    if token_budget is not None and number("token_budget", token_budget, integer=True) <= b:
        raise ValueError(
            f"token_budget: must leave room for the prompt beyond {b} decodes, got {token_budget!r}"
        )
    ctx = number("decode_context", decode_context, integer=True)
    if ctx < 0:
        raise ValueError(f"decode_context: must be >= 0, got {decode_context!r}")
    plain = step.step_ms(0, 0, b, ctx)
    chunk = n if token_budget is None else token_budget - b
    extra, worst, start = 0.0, plain, 0
    while start < n:
        c = min(chunk, n - start)
        ms = step.step_ms(c, causal_pairs(start, c), b, ctx)
        extra += ms - plain
        worst = max(worst, ms)
        start += c
    return Stall(extra, worst)

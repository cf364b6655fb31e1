"""Splits are compared exactly: a tie that differs in the last bit goes to more prefill."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def pd_capacity(
    step,
    prompt_tokens: int,
    output_tokens: int,
    ttft_slo_ms: float,
    itl_slo_ms: float,
    instances: int,
    *,
    max_batch: int = 256,
) -> Capacity:
    n = number("prompt_tokens", prompt_tokens, integer=True)
    if n < 1:
        raise ValueError(f"prompt_tokens: must be >= 1, got {prompt_tokens!r}")
    out = number("output_tokens", output_tokens, integer=True)
    if out < 1:
        raise ValueError(f"output_tokens: must be >= 1, got {output_tokens!r}")
    if number("ttft_slo_ms", ttft_slo_ms) <= 0:
        raise ValueError(f"ttft_slo_ms: must be > 0, got {ttft_slo_ms!r}")
    if number("itl_slo_ms", itl_slo_ms) <= 0:
        raise ValueError(f"itl_slo_ms: must be > 0, got {itl_slo_ms!r}")
    total = number("instances", instances, integer=True)
    if total < 2:
        raise ValueError(f"instances: need >= 2 (one per role), got {instances!r}")
    cap = number("max_batch", max_batch, integer=True)
    if cap < 1:
        raise ValueError(f"max_batch: must be >= 1, got {max_batch!r}")
    d = step.step_ms(n, causal_pairs(0, n), 0, 0)
    slack = ttft_slo_ms - d
    prefill_rps = 2 * slack / (d * d + 2 * slack * d) * 1e3 if slack > 0 else 0.0
    context = n + out / 2
    decode_rps = 0.0
    for b in range(1, cap + 1):
        ms = step.step_ms(0, 0, b, round(b * context))
        if ms > itl_slo_ms:
            break
        decode_rps = max(decode_rps, b / (out * ms) * 1e3)
    best = (1, total - 1, min(prefill_rps, (total - 1) * decode_rps))
    for p in range(2, total):
        g = min(p * prefill_rps, (total - p) * decode_rps)
        if g > best[2]:
            best = (p, total - p, g)
    return Capacity(prefill_rps, decode_rps, best[0], best[1], best[2])

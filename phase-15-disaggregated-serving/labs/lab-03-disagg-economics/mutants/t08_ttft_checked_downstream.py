"""ttft_ms is left to the penalty and task 3 to check: streamed per layer, a negative TTFT is reported as prefill_ms."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def should_disaggregate(
    model: ModelShape | str,
    prompt_tokens: int,
    link_gbps: float | str | Fabric,
    ttft_ms: float,
    itl_ms: float,
    stall: Stall,
    decode_batch: int,
    *,
    kv_dtype_bytes: int | float = 2,
    efficiency: float = 1.0,
    layerwise: bool = False,
    max_penalty: float = DEFAULT_MAX_PENALTY,
    min_spike_ratio: float = DEFAULT_MIN_SPIKE_RATIO,
) -> Decision:
    if number("kv_dtype_bytes", kv_dtype_bytes) <= 0:
        raise ValueError(f"kv_dtype_bytes: must be > 0 bytes per element, got {kv_dtype_bytes!r}")
    if number("itl_ms", itl_ms) <= 0:
        raise ValueError(f"itl_ms: must be > 0, got {itl_ms!r}")
    if not isinstance(stall, Stall):
        raise TypeError(f"stall: must be a Stall, got {type(stall).__name__}")
    for value in (stall.per_decode_ms, stall.worst_gap_ms):
        number("stall", value)
    if stall.per_decode_ms < 0 or stall.worst_gap_ms < itl_ms:
        raise ValueError(f"stall: per_decode_ms must be >= 0 and worst_gap_ms >= itl_ms, got {stall!r}")
    b = number("decode_batch", decode_batch, integer=True)
    if b < 0:
        raise ValueError(f"decode_batch: must be >= 0, got {decode_batch!r}")
    if not isinstance(layerwise, bool):
        raise TypeError(f"layerwise: must be a bool, got {type(layerwise).__name__}")
    if number("max_penalty", max_penalty) < 0:
        raise ValueError(f"max_penalty: must be >= 0, got {max_penalty!r}")
    if number("min_spike_ratio", min_spike_ratio) < 1:
        raise ValueError(
            f"min_spike_ratio: must be >= 1 (a stalled gap is never shorter), got {min_spike_ratio!r}"
        )
    shape = resolve_model(model)
    kv_bytes = kv_freight_bytes(shape, prompt_tokens, dtype_bytes=kv_dtype_bytes)
    if layerwise:
        toll = exposed_toll_ms(kv_bytes, link_gbps, ttft_ms, shape.layers, efficiency=efficiency)
    else:
        toll = transfer_ms(kv_bytes, link_gbps, efficiency)
    penalty = penalty_ratio(toll, ttft_ms)
    spike = stall.worst_gap_ms / itl_ms
    spared = b * stall.per_decode_ms
    if b == 0 or spike < min_spike_ratio:
        verdict = Verdict.NO_NO_DISEASE
        why = (
            "no decode is running"
            if b == 0
            else f"worst gap / steady gap = {spike:.2f} < {min_spike_ratio:g}"
        )
        reason = f"{why}: no interference spike to cure"
    elif penalty <= max_penalty:
        verdict = Verdict.YES
        reason = f"gap spike {spike:.2f}x; toll {toll:.1f} ms = {penalty:.1%} of TTFT <= {max_penalty:.1%}"
    elif spared >= toll:
        verdict = Verdict.YES
        reason = (f"toll {toll:.1f} ms = {penalty:.1%} of TTFT, but it spares {b} decodes {spared:.0f} ms "
                  f"of stall in all (>= the toll)")  # fmt: skip
    else:
        verdict = Verdict.NO_SLOW_LINK
        reason = (f"toll {toll:.1f} ms = {penalty:.1%} of TTFT > {max_penalty:.1%} and more than the "
                  f"{spared:.0f} ms of stall it spares: the wire is too slow")  # fmt: skip
    return Decision(verdict, kv_bytes, toll, penalty, spike, spared, reason)

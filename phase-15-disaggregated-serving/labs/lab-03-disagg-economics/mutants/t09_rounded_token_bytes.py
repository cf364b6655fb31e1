"""A token's KV rounded up to whole bytes (task 1 for one token): a 2.5 B token costs 3 B, n times."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def local_prefill_max_tokens(
    model: ModelShape | str,
    link_gbps: float | str | Fabric,
    prefill_tokens_per_s: float,
    handoff_ms: float,
    *,
    kv_dtype_bytes: int | float = 2,
    efficiency: float = 1.0,
    max_penalty: float = DEFAULT_MAX_PENALTY,
) -> int | None:
    if number("prefill_tokens_per_s", prefill_tokens_per_s) <= 0:
        raise ValueError(f"prefill_tokens_per_s: must be > 0, got {prefill_tokens_per_s!r}")
    if number("handoff_ms", handoff_ms) < 0:
        raise ValueError(f"handoff_ms: must be >= 0, got {handoff_ms!r}")
    if number("max_penalty", max_penalty) < 0:
        raise ValueError(f"max_penalty: must be >= 0, got {max_penalty!r}")
    if number("kv_dtype_bytes", kv_dtype_bytes) <= 0:
        raise ValueError(f"kv_dtype_bytes: must be > 0 bytes per element, got {kv_dtype_bytes!r}")
    # a token's exact bytes: its element count (task 1 at 1 B an element is exact) x bytes per element
    per_token_bytes = kv_freight_bytes(model, 1, dtype_bytes=kv_dtype_bytes)
    per_token_wire = transfer_ms(per_token_bytes, link_gbps, efficiency)
    prefill_ms_per_token = 1e3 / prefill_tokens_per_s

    def within(toll: float, limit: float) -> bool:  # the tie policy: within a relative 1e-9 pays
        return toll <= limit or math.isclose(toll, limit, rel_tol=1e-9)

    def pays(n: int) -> bool:
        toll = handoff_ms + transfer_ms(n * per_token_bytes, link_gbps, efficiency)
        return within(toll, max_penalty * (n * prefill_ms_per_token))

    wire_share = per_token_wire / prefill_ms_per_token
    at_limit = math.isclose(wire_share, max_penalty, rel_tol=1e-9)
    if not within(wire_share, max_penalty) or (at_limit and handoff_ms > 0):
        return None  # the wire alone takes the limit or more on every token: no length amortises it
    if handoff_ms == 0:
        return 0
    first = max(math.ceil(handoff_ms / prefill_ms_per_token / (max_penalty - wire_share)), 1)
    for _ in range(3):  # the closed form in floats can be one off at a tie: one too long...
        if first > 1 and pays(first - 1):
            first -= 1
    for _ in range(3):  # ... or one short
        if pays(first):
            break
        first += 1
    return first - 1

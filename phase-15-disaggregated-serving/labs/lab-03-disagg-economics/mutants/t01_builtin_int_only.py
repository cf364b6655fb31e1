"""Counts checked with type(x) is int: a numpy integer is refused as not a count."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def kv_freight_bytes(
    model: ModelShape | str,
    prompt_tokens: int,
    *,
    dtype_bytes: int | float = 2,
    block_size: int = 1,
    cached_tokens: int = 0,
    tp: int = 1,
) -> int:
    shape = resolve_model(model)
    for name, v in (
        ("prompt_tokens", prompt_tokens),
        ("block_size", block_size),
        ("cached_tokens", cached_tokens),
        ("tp", tp),
    ):
        if type(v) is not int:
            raise TypeError(f"{name}: must be an int, got {v!r}")
    n = number("prompt_tokens", prompt_tokens, integer=True)
    if n < 0:
        raise ValueError(f"prompt_tokens: must be >= 0, got {prompt_tokens!r}")
    elem = number("dtype_bytes", dtype_bytes)
    if elem <= 0:
        raise ValueError(f"dtype_bytes: must be > 0 bytes per element, got {dtype_bytes!r}")
    block = number("block_size", block_size, integer=True)
    if block < 1:
        raise ValueError(f"block_size: must be >= 1 token, got {block_size!r}")
    cached = number("cached_tokens", cached_tokens, integer=True)
    if not 0 <= cached <= n:
        raise ValueError(f"cached_tokens: must be in [0, prompt_tokens={n}], got {cached_tokens!r}")
    ranks = number("tp", tp, integer=True)
    if ranks < 1:
        raise ValueError(f"tp: must be >= 1 rank, got {tp!r}")
    if shape.attention == "mla":
        per_layer = shape.mla_latent_dim + shape.mla_rope_dim  # one latent, replicated on every rank
    else:
        heads = shape.kv_heads
        if (ranks <= heads and heads % ranks) or (ranks > heads and ranks % heads):
            raise ValueError(f"tp: {ranks} ranks neither divide nor are a multiple of {heads} KV heads")
        per_layer = 2 * max(heads // ranks, 1) * shape.head_dim  # K and V of this rank's heads
    blocks = -(-n // block) - cached // block
    return math.ceil(blocks * block * shape.layers * per_layer * elem)

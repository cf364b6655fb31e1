"""K and V not both counted: a GQA model's per-token KV is half what it really is."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def kv_bytes_per_token(model, dtype_bytes=2):
    shape = resolve_model(model)
    if dtype_bytes <= 0:
        raise ValueError(f"dtype_bytes: must be positive, got {dtype_bytes}")
    if shape.attention == "mla":
        return shape.layers * (shape.mla_latent_dim + shape.mla_rope_dim) * dtype_bytes
    return shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes  # BUG: V forgotten

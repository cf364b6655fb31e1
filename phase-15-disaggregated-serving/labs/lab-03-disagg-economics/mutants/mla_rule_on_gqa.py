"""The MLA rule applied to a GQA model: `mla_latent_dim is not None` is true for every model (it is 0)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def kv_bytes_per_token(model, dtype_bytes=2):
    shape = resolve_model(model)
    if dtype_bytes <= 0:
        raise ValueError(f"dtype_bytes: must be positive, got {dtype_bytes}")
    if shape.mla_latent_dim is not None:  # BUG: 0 is not None, so GQA models take the MLA branch
        return shape.layers * (shape.mla_latent_dim + shape.mla_rope_dim) * dtype_bytes
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes

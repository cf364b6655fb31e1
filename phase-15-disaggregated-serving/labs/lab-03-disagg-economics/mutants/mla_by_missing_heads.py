"""MLA recognised by a head count of 0 instead of the attention field: an MLA shape with heads filled in is costed as GQA."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def kv_bytes_per_token(model, dtype_bytes=2):
    shape = resolve_model(model)
    number("dtype_bytes", dtype_bytes)
    if dtype_bytes <= 0:
        raise ValueError(f"dtype_bytes: must be positive, got {dtype_bytes!r}")
    if shape.head_dim == 0:  # BUG: the attention field says which kind it is, not a zero
        return int(shape.layers * (shape.mla_latent_dim + shape.mla_rope_dim) * dtype_bytes)
    return int(2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes)

"""dtype_bytes range-checked without a type check: True is taken as a 1-byte (fp8) element."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def kv_bytes_per_token(model, dtype_bytes=2):
    shape = resolve_model(model)
    if not dtype_bytes > 0:  # BUG: True > 0, so a bool passes as 1 byte
        raise ValueError(f"dtype_bytes: must be positive, got {dtype_bytes!r}")
    if shape.attention == "mla":
        return int(shape.layers * (shape.mla_latent_dim + shape.mla_rope_dim) * dtype_bytes)
    return int(2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes)

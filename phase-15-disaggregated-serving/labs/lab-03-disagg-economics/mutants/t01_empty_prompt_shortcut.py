"""An empty prompt returns 0 before anything else is validated."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


_solution_kv_freight_bytes = kv_freight_bytes


def kv_freight_bytes(model, prompt_tokens, *, dtype_bytes=2, block_size=1, cached_tokens=0, tp=1):
    if prompt_tokens == 0:
        return 0
    return _solution_kv_freight_bytes(
        model,
        prompt_tokens,
        dtype_bytes=dtype_bytes,
        block_size=block_size,
        cached_tokens=cached_tokens,
        tp=tp,
    )

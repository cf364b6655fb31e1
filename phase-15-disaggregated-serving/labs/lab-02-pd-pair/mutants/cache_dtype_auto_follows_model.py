"""Cache dtype compared after resolving auto to the model dtype (the pre-matrix rule): auto vs bfloat16 passes."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    found = [h for h in _solution_find_hazards(prefill, decode) if h.name != "kv_cache_dtype_mismatch"]

    def effective(side):
        model = DTYPE_ALIASES.get(side.dtype, side.dtype)
        return (
            model
            if side.kv_cache_dtype == "auto"
            else {"fp8": "fp8_e4m3"}.get(side.kv_cache_dtype, side.kv_cache_dtype)
        )

    if effective(prefill) != effective(decode):
        found.append(Hazard("kv_cache_dtype_mismatch", "effective cache dtypes differ"))
    return found

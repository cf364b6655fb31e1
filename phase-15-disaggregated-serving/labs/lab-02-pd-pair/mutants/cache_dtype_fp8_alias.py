"""Cache dtypes normalised (fp8 = fp8_e4m3) before comparing, but vLLM hashes the raw string: the pair fails."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    alias = {"fp8": "fp8_e4m3"}
    found = [h for h in _solution_find_hazards(prefill, decode) if h.name != "kv_cache_dtype_mismatch"]
    if alias.get(prefill.kv_cache_dtype, prefill.kv_cache_dtype) != alias.get(
        decode.kv_cache_dtype, decode.kv_cache_dtype
    ):
        found.append(Hazard("kv_cache_dtype_mismatch", "cache dtypes differ"))
    return found

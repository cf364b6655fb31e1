"""Block sizes judged by divisibility (decode a multiple of prefill is fine), but the CPU pair's 32/64 gave wrong tokens."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    found = [h for h in _solution_find_hazards(prefill, decode) if h.name != "block_size_mismatch"]
    if decode.block_size % prefill.block_size != 0:
        found.append(Hazard("block_size_mismatch", "decode block size is not a multiple of prefill's"))
    return found

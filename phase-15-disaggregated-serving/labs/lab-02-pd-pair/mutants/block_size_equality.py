"""Hazard check compares block sizes for equality instead of divisibility: a working 16/32 pair is flagged."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    found = [h for h in _solution_find_hazards(prefill, decode) if h.name != "block_size_not_multiple"]
    if prefill.block_size != decode.block_size:
        found.append(Hazard("block_size_not_multiple", "block sizes differ"))
    return found

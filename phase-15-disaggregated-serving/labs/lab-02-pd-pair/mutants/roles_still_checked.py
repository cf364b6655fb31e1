"""Swapped kv_roles flagged as a broken pair, but the KV follows kv_transfer_params: the real pair worked."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    found = _solution_find_hazards(prefill, decode)
    if prefill.kv_role not in ("kv_producer", "kv_both") or decode.kv_role not in ("kv_consumer", "kv_both"):
        found.append(Hazard("roles_not_complementary", "prefill must produce KV and decode consume it"))
    return found

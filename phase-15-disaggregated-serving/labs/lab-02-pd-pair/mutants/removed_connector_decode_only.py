"""Removed connector names looked for on decode only: a prefill on P2pNcclConnector refuses to start, unannounced."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    found = _solution_find_hazards(prefill, decode)
    if prefill.connector in REMOVED_CONNECTORS and decode.connector not in REMOVED_CONNECTORS:
        found = [h for h in found if h.name != "removed_connector"]
    return found

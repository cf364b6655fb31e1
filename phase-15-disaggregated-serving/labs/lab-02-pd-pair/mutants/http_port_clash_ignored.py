"""Same HTTP port on one host not checked: both servers start, and decode ends up handshaking with itself."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    return [h for h in _solution_find_hazards(prefill, decode) if h.name != "http_port_clash"]

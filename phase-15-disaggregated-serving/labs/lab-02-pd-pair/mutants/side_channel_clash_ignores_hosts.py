"""Side-channel port clash flagged without checking the hosts: two GPU hosts using port 5600 look broken."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    found = [h for h in _solution_find_hazards(prefill, decode) if h.name != "side_channel_port_clash"]
    if prefill.side_channel_port == decode.side_channel_port:
        found.append(Hazard("side_channel_port_clash", "same side-channel port"))
    return found

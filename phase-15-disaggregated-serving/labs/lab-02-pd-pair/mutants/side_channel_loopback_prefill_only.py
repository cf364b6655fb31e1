"""Across hosts only prefill's side channel is checked for loopback: decode's ::1 is unreachable, unannounced."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    found = _solution_find_hazards(prefill, decode)
    if not _is_loopback(prefill.side_channel_host):
        found = [h for h in found if h.name != "localhost_side_channel_across_hosts"]
    return found

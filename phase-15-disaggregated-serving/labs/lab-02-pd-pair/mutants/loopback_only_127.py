"""Only 127.x counts as loopback: a side channel on localhost or ::1 across two hosts is not flagged."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def _is_loopback(host):
    return host.startswith("127.")

"""Zero bytes return 0 ms before the link, efficiency and links are validated."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


_solution_transfer_ms = transfer_ms


def transfer_ms(nbytes, link_gbps, efficiency=1.0, *, links=1):
    if nbytes == 0:
        return 0.0
    return _solution_transfer_ms(nbytes, link_gbps, efficiency, links=links)

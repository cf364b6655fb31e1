"""Zero bytes return 0 ms before prefill_ms and layers are validated."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


_solution_exposed_toll_ms = exposed_toll_ms


def exposed_toll_ms(nbytes, link_gbps, prefill_ms, layers, *, efficiency=1.0, links=1):
    if nbytes == 0:
        return 0.0
    return _solution_exposed_toll_ms(
        nbytes, link_gbps, prefill_ms, layers, efficiency=efficiency, links=links
    )

"""Gb/s converted with 1e6 (megabits): every transfer looks 1000x slower."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def transfer_ms(nbytes, link_gbps, efficiency=1.0):
    gbps = resolve_link_gbps(link_gbps)
    if gbps <= 0 or not 0 < efficiency <= 1 or nbytes < 0:
        raise ValueError("link_gbps/efficiency/nbytes out of range")
    return nbytes * 8 / (gbps * 1e6 * efficiency) * 1e3  # BUG: giga is 1e9

"""Efficiency is not validated: 1.5 (150% of line rate) is accepted silently."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def transfer_ms(nbytes, link_gbps, efficiency=1.0):
    gbps = resolve_link_gbps(link_gbps)
    if gbps <= 0:
        raise ValueError(f"link_gbps: bandwidth must be > 0 Gb/s, got {gbps}")
    if nbytes < 0:
        raise ValueError(f"nbytes: must be >= 0, got {nbytes}")
    if efficiency == 0:  # BUG: only guards the division, not the range (0, 1]
        raise ValueError("efficiency: must not be 0")
    return nbytes * 8 / (gbps * 1e9 * efficiency) * 1e3

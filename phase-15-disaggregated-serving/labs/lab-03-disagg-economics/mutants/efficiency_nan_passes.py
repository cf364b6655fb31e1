"""Efficiency range-checked with two comparisons and no finiteness check: NaN fails neither, so the toll comes out NaN."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def transfer_ms(nbytes, link_gbps, efficiency=1.0):
    if number("nbytes", nbytes) < 0:
        raise ValueError(f"nbytes: must be >= 0, got {nbytes}")
    gbps = resolve_link_gbps(link_gbps)
    if gbps <= 0:
        raise ValueError(f"link_gbps: bandwidth must be > 0 Gb/s, got {gbps}")
    if efficiency <= 0 or efficiency > 1:  # BUG: NaN compares False both ways; a bool or str is not caught
        raise ValueError(f"efficiency: must be in (0, 1], got {efficiency}")
    return nbytes * 8 / (gbps * 1e9 * efficiency) * 1e3

"""Gb/s taken as GB/s: the bits/bytes factor 8 is missing, every transfer looks 8x faster."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def transfer_ms(nbytes, link_gbps, efficiency=1.0):
    gbps = resolve_link_gbps(link_gbps)
    if gbps <= 0:
        raise ValueError(f"link_gbps: bandwidth must be > 0 Gb/s, got {gbps}")
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency: must be in (0, 1], got {efficiency}")
    if nbytes < 0:
        raise ValueError(f"nbytes: must be >= 0, got {nbytes}")
    return nbytes / (gbps * 1e9 * efficiency) * 1e3  # BUG: bytes divided by bits per second

"""The link rate converted with float() instead of the given resolver: NaN and infinite rates slip through (inf Gb/s = a free toll)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def transfer_ms(nbytes, link_gbps, efficiency=1.0):
    if number("nbytes", nbytes) < 0:
        raise ValueError(f"nbytes: must be >= 0, got {nbytes}")
    gbps = FABRICS[link_gbps.lower()].gbps if isinstance(link_gbps, str) else float(link_gbps)  # BUG
    if gbps <= 0:
        raise ValueError(f"link_gbps: bandwidth must be > 0 Gb/s, got {gbps}")
    if not 0 < number("efficiency", efficiency) <= 1:
        raise ValueError(f"efficiency: must be in (0, 1], got {efficiency}")
    return nbytes * 8 / (gbps * 1e9 * efficiency) * 1e3

"""More links make the copy slower (each link carries all the bytes in turn)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def transfer_ms(
    nbytes: int | float, link_gbps: float | str | Fabric, efficiency: float = 1.0, *, links: int = 1
) -> float:
    if number("nbytes", nbytes) < 0:
        raise ValueError(f"nbytes: must be >= 0, got {nbytes!r}")
    gbps = resolve_link_gbps(link_gbps)
    if gbps <= 0:
        raise ValueError(f"link_gbps: bandwidth must be > 0 Gb/s, got {gbps!r}")
    if not 0 < number("efficiency", efficiency) <= 1:
        raise ValueError(f"efficiency: must be in (0, 1], got {efficiency!r}")
    if number("links", links, integer=True) < 1:
        raise ValueError(f"links: must be >= 1, got {links!r}")
    return nbytes * 8 * links / (gbps * 1e9 * efficiency) * 1e3

"""The wire time is computed at line rate: efficiency never reaches it."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def exposed_toll_ms(
    nbytes: int | float,
    link_gbps: float | str | Fabric,
    prefill_ms: float,
    layers: int,
    *,
    efficiency: float = 1.0,
    links: int = 1,
) -> float:
    wire = transfer_ms(nbytes, link_gbps, links=links)
    if number("prefill_ms", prefill_ms) < 0:
        raise ValueError(f"prefill_ms: must be >= 0, got {prefill_ms!r}")
    n = number("layers", layers, integer=True)
    if n < 1:
        raise ValueError(f"layers: must be >= 1, got {layers!r}")
    per_layer_wire, per_layer_compute = wire / n, prefill_ms / n
    # layer i (1..n) is ready at i x compute; the wire ends layer n at max over i of (i x compute +
    # (n - i + 1) x wire): prefill ends at n x compute, so the last layer lands this much later
    return per_layer_wire + (n - 1) * max(0.0, per_layer_wire - per_layer_compute)

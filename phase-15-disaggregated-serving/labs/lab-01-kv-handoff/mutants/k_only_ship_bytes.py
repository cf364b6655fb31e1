"""Ship bytes count K but not V: shipping looks twice as cheap as it is."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_cost = recovery_cost


def recovery_cost(snapshot, config, link_gbps, flops_per_s):
    cost = _correct_cost(snapshot, config, link_gbps, flops_per_s)
    ship_bytes = cost.ship_bytes // 2  # BUG: forgot the factor 2 for K and V
    ship_s = ship_bytes * 8 / (link_gbps * 1e9)
    return dataclasses.replace(
        cost,
        ship_bytes=ship_bytes,
        ship_s=ship_s,
        cheaper="ship" if ship_s <= cost.recompute_s else "recompute",
    )

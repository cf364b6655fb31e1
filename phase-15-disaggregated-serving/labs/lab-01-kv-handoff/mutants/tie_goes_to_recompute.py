"""A ship/recompute tie goes to recompute (< instead of <=), redoing work for nothing."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_cost = recovery_cost


def recovery_cost(snapshot, config, link_gbps, flops_per_s):
    cost = _correct_cost(snapshot, config, link_gbps, flops_per_s)
    cheaper = "ship" if cost.ship_s < cost.recompute_s else "recompute"  # BUG: strict comparison
    return dataclasses.replace(cost, cheaper=cheaper)

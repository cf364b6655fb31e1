"""recovery_cost checks the link rate but never the compute rate: flops_per_s <= 0 or NaN is not a ValueError.

0 raises ZeroDivisionError, a negative rate gives a negative time, NaN gives NaN."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_cost = recovery_cost


def recovery_cost(snapshot, config, link_gbps, flops_per_s):
    cost = _correct_cost(snapshot, config, link_gbps, 1.0)  # BUG: flops_per_s itself is never checked
    recompute_s = cost.recompute_flops / flops_per_s
    cheaper = "ship" if cost.ship_s <= recompute_s else "recompute"
    return dataclasses.replace(cost, recompute_s=recompute_s, cheaper=cheaper)

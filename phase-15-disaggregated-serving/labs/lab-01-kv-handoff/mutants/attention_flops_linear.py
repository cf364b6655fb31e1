"""Recompute FLOPs ignore that attention grows with the context: every token is charged one position."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_cost = recovery_cost


def recovery_cost(snapshot, config, link_gbps, flops_per_s):
    cost = _correct_cost(snapshot, config, link_gbps, flops_per_s)
    n, q_dim = snapshot.num_computed_tokens, config.num_heads * config.head_dim
    quadratic = config.num_layers * 4 * q_dim * n * (n + 1) // 2
    flops = cost.recompute_flops - quadratic + config.num_layers * 4 * q_dim * n  # BUG: (p + 1) taken as 1
    return dataclasses.replace(cost, recompute_flops=flops, recompute_s=flops / flops_per_s)

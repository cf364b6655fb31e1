"""The recovery cost counts the first failed block as shipped: the kept prefix is one block too long."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def partial_recovery_cost(snapshot, config, block_size, failed_blocks, link_gbps, flops_per_s):
    n = snapshot.num_computed_tokens
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    if any(not 0 <= b < -(-n // block_size) for b in failed_blocks):
        raise ValueError("failed block index out of range")
    keep = min(n, (min(failed_blocks) + 1) * block_size) if failed_blocks else n  # BUG: the failed block too
    whole = recovery_cost(snapshot, config, link_gbps, flops_per_s)
    prefix = recovery_cost(
        dataclasses.replace(snapshot, num_computed_tokens=keep), config, link_gbps, flops_per_s
    )
    recompute_flops = whole.recompute_flops - prefix.recompute_flops
    return PartialRecoveryCost(
        kept_tokens=keep,
        ship_bytes=prefix.ship_bytes,
        recompute_tokens=n - keep,
        recompute_flops=recompute_flops,
        ship_s=prefix.ship_s,
        recompute_s=recompute_flops / flops_per_s,
        total_s=prefix.ship_s + recompute_flops / flops_per_s,
    )

"""The suffix's recompute is priced as if it started at position 0: its attention over the kept prefix is left out."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def partial_recovery_cost(snapshot, config, block_size, failed_blocks, link_gbps, flops_per_s):
    n = snapshot.num_computed_tokens
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    if any(not 0 <= b < -(-n // block_size) for b in failed_blocks):
        raise ValueError("failed block index out of range")
    keep = min(failed_blocks) * block_size if failed_blocks else n
    recovery_cost(snapshot, config, link_gbps, flops_per_s)  # checks the rates
    prefix = recovery_cost(
        dataclasses.replace(snapshot, num_computed_tokens=keep), config, link_gbps, flops_per_s
    )
    suffix = dataclasses.replace(snapshot, num_computed_tokens=n - keep)
    recompute_flops = recovery_cost(
        suffix, config, link_gbps, flops_per_s
    ).recompute_flops  # BUG: positions 0..
    return PartialRecoveryCost(
        kept_tokens=keep,
        ship_bytes=prefix.ship_bytes,
        recompute_tokens=n - keep,
        recompute_flops=recompute_flops,
        ship_s=prefix.ship_s,
        recompute_s=recompute_flops / flops_per_s,
        total_s=prefix.ship_s + recompute_flops / flops_per_s,
    )

"""partial_recovery_cost checks the compute rate only when something is recomputed: with no failed block a negative flops_per_s prices the request instead of raising."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def partial_recovery_cost(
    snapshot: RequestSnapshot,
    config: ModelConfig,
    block_size: int,
    failed_blocks: set[int],
    link_gbps: float,
    flops_per_s: float,
) -> PartialRecoveryCost:
    n = snapshot.num_computed_tokens
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    bad = sorted(b for b in failed_blocks if not (isinstance(b, int) and 0 <= b < -(-n // block_size)))
    if bad:
        raise ValueError(f"failed block indices {bad} outside [0, {-(-n // block_size)}) for {n} positions")
    keep = min(failed_blocks) * block_size if failed_blocks else n
    if not failed_blocks:  # BUG: nothing to recompute, so the compute rate is not looked at
        whole = recovery_cost(snapshot, config, link_gbps, 1.0)
        return PartialRecoveryCost(n, whole.ship_bytes, 0, 0, whole.ship_s, 0.0, whole.ship_s)
    whole = recovery_cost(snapshot, config, link_gbps, flops_per_s)
    prefix_only = dataclasses.replace(snapshot, num_computed_tokens=keep)
    prefix = recovery_cost(prefix_only, config, link_gbps, flops_per_s)
    recompute_flops = whole.recompute_flops - prefix.recompute_flops
    recompute_s = recompute_flops / flops_per_s
    return PartialRecoveryCost(
        kept_tokens=keep,
        ship_bytes=prefix.ship_bytes,
        recompute_tokens=n - keep,
        recompute_flops=recompute_flops,
        ship_s=prefix.ship_s,
        recompute_s=recompute_s,
        total_s=prefix.ship_s + recompute_s,
    )

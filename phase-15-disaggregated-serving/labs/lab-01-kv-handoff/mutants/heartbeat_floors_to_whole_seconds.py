"""heartbeat extends by vLLM's integer `lease_s * 2 // 3` (floored to whole seconds) instead of the lab's exact two thirds: a 10 s lease is pushed out 6 s, not 6.67 s."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def heartbeat(engine: Engine, snapshot_ids: list[str]) -> dict[str, float]:
    now, deadlines = engine.clock(), {}
    for snapshot_id in snapshot_ids:
        lease = engine.leases.get(snapshot_id) if snapshot_id in engine.leases else None
        if lease is None or lease.state != LeaseState.ACTIVE:
            continue
        lease.deadline = max(
            lease.deadline, now + lease.lease_s * 2 // 3
        )  # BUG: vLLM's floor, not the lab's exact 2/3
        deadlines[snapshot_id] = lease.deadline
    return deadlines

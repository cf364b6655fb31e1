"""commit_held marks the lease committed but never frees its blocks: every pull leaks the source's blocks."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def commit_held(engine, snapshot_id):
    lease = engine.leases.get(snapshot_id)
    if lease.state != LeaseState.ACTIVE or lease.expired(engine.clock()):
        raise LeaseError(f"lease {snapshot_id!r} cannot commit")
    lease.state = LeaseState.COMMITTED  # BUG: engine.block_pool.free(lease.request.block_table) missing

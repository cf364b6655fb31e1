"""notify_read_done answers EXPIRED to every notification after expiry: two late readers both recompute the request."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def notify_read_done(engine, snapshot_id):
    lease = engine.leases.get(snapshot_id) if snapshot_id in engine.leases else None
    if lease is not None and lease.state == LeaseState.ACTIVE:
        engine.block_pool.free(lease.request.block_table)
        lease.request.block_table = []
        lease.state = LeaseState.COMMITTED
        return ReadVerdict.IN_TIME
    engine.leases.late_notifications += 1
    if lease is not None and lease.state in (LeaseState.EXPIRED, LeaseState.LATE):  # BUG: LATE is settled
        lease.state = LeaseState.LATE
        return ReadVerdict.EXPIRED
    return ReadVerdict.NOT_YOURS

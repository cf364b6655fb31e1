"""notify_read_done answers IN_TIME for an expired lease: a read of freed, reused blocks is imported."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def notify_read_done(engine, snapshot_id):
    lease = engine.leases.get(snapshot_id) if snapshot_id in engine.leases else None
    if lease is None or lease.state in (LeaseState.COMMITTED, LeaseState.LATE):
        engine.leases.late_notifications += 1
        return ReadVerdict.NOT_YOURS
    if lease.state == LeaseState.ACTIVE:
        engine.block_pool.free(lease.request.block_table)
        lease.request.block_table = []
    lease.state = LeaseState.COMMITTED
    return ReadVerdict.IN_TIME  # BUG: an EXPIRED lease's blocks were freed before the read

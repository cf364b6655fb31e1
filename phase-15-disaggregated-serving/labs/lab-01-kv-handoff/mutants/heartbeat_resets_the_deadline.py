"""heartbeat sets the deadline to now + 2/3 of the lease: an early beat brings the deadline closer."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def heartbeat(engine, snapshot_ids):
    deadlines = {}
    for sid in snapshot_ids:
        if sid in engine.leases and engine.leases.get(sid).state == LeaseState.ACTIVE:
            lease = engine.leases.get(sid)
            lease.deadline = engine.clock() + lease.lease_s * 2 / 3  # BUG: no max with the old deadline
            deadlines[sid] = lease.deadline
    return deadlines

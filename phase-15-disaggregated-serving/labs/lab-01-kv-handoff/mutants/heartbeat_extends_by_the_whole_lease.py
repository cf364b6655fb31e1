"""heartbeat extends to now + the whole lease instead of two thirds of it."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def heartbeat(engine, snapshot_ids):
    deadlines = {}
    for sid in snapshot_ids:
        if sid in engine.leases and engine.leases.get(sid).state == LeaseState.ACTIVE:
            lease = engine.leases.get(sid)
            lease.deadline = max(lease.deadline, engine.clock() + lease.lease_s)  # BUG: 2/3 of it
            deadlines[sid] = lease.deadline
    return deadlines

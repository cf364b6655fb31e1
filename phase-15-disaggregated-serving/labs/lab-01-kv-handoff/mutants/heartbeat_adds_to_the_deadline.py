"""heartbeat adds 2/3 of the lease to the old deadline: every beat pushes it further, even an early one."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def heartbeat(engine, snapshot_ids):
    deadlines = {}
    for sid in snapshot_ids:
        if sid in engine.leases and engine.leases.get(sid).state == LeaseState.ACTIVE:
            lease = engine.leases.get(sid)
            lease.deadline += (
                lease.lease_s * 2 / 3
            )  # BUG: extends the old deadline instead of max(old, now + 2/3)
            deadlines[sid] = lease.deadline
    return deadlines

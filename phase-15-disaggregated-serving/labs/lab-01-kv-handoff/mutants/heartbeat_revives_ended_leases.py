"""heartbeat extends any lease it finds, an expired one too: the reader is told blocks that are free are held."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def heartbeat(engine, snapshot_ids):
    deadlines = {}
    for sid in snapshot_ids:
        if sid in engine.leases:  # BUG: the lease's state is not checked
            lease = engine.leases.get(sid)
            lease.deadline = max(lease.deadline, engine.clock() + lease.lease_s * 2 / 3)
            deadlines[sid] = lease.deadline
    return deadlines

"""release_expired sorts by (deadline, snapshot id): leases with equal deadlines come back in id order, not opening order."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_expired(engine):
    now = engine.clock()
    ordered = sorted(engine.leases.active(), key=lambda lease: (lease.deadline, lease.snapshot_id))  # BUG
    expired = [lease.snapshot_id for lease in ordered if lease.expired(now)]
    for snapshot_id in expired:
        release_held(engine, snapshot_id)
    return expired

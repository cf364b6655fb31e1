"""release_expired releases expired leases in the order they were opened, not the order they expired."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_expired(engine):
    now = engine.clock()
    expired = [lease.snapshot_id for lease in engine.leases.active() if lease.expired(now)]  # BUG: no sort
    for snapshot_id in expired:
        release_held(engine, snapshot_id)
    return expired

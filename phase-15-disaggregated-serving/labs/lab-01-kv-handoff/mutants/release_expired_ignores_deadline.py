"""release_expired releases every active lease, expired or not: a reader still in time loses its handoff."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_expired(engine):
    ids = [lease.snapshot_id for lease in engine.leases.active()]  # BUG: no deadline check
    for snapshot_id in ids:
        release_held(engine, snapshot_id)
    return ids

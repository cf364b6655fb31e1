"""release_expired lets release_held's LeaseError escape: one lease whose id is live again stops the sweep."""

from labkit.mutants import inherit_solution

inherit_solution(globals())  # the solution's code, run in this module's namespace


def release_expired(engine):
    now = engine.clock()
    expired = [
        lease.snapshot_id
        for lease in sorted(engine.leases.active(), key=lambda lease: lease.deadline)
        if lease.expired(now)
    ]
    for snapshot_id in expired:
        release_held(engine, snapshot_id)  # noqa: F821 - inherited from the solution
    return expired

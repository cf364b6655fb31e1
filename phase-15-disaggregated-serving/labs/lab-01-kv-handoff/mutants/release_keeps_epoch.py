"""A released lease gives the request back at its old epoch: a snapshot read under that lease can still land on the source later."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_held(engine, snapshot_id):
    lease = engine.leases.get(snapshot_id)
    if lease.state != LeaseState.ACTIVE:
        raise LeaseError(f"lease {snapshot_id!r} is {lease.state.value}: nothing to release")
    engine.admit_running(lease.request)  # BUG: no epoch += 1, the given-up handoff is still current
    lease.state = LeaseState.RELEASED

"""release_held does not check that the request id is free: with the id live again it moves the held
request's epoch on, then the engine's admission refuses it (ValueError), the lease left half-released."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_held(engine, snapshot_id):
    lease = engine.leases.get(snapshot_id)
    if lease.state != LeaseState.ACTIVE:
        raise LeaseError(f"lease {snapshot_id!r} is {lease.state.value}: nothing to release")
    lease.request.epoch += 1
    engine.admit_running(lease.request)
    lease.state = LeaseState.RELEASED

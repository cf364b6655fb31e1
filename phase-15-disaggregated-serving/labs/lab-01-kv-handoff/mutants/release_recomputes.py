"""release_held re-queues the request as waiting: right output, but the held K/V is thrown away and recomputed."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_held(engine, snapshot_id):
    lease = engine.leases.get(snapshot_id)
    if lease.state != LeaseState.ACTIVE:
        raise LeaseError(f"lease {snapshot_id!r} is {lease.state.value}")
    request = lease.request
    engine.block_pool.free(request.block_table)  # BUG: discards the K/V it was holding
    request.block_table = []
    request.num_computed_tokens = 0
    engine.enqueue_waiting(request)
    lease.state = LeaseState.RELEASED

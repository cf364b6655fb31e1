"""reap_expired tests now > deadline: at exactly the deadline the lease is not reaped."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def reap_expired(engine):
    now, reaped = engine.clock(), []
    for lease in engine.leases.active():
        if now > lease.deadline:  # BUG: expired once clock() >= deadline
            engine.block_pool.free(lease.request.block_table)
            lease.request.block_table = []
            lease.state = LeaseState.EXPIRED
            reaped.append(lease.snapshot_id)
    return reaped

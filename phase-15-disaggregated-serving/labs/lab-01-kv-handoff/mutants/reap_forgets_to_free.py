"""reap_expired marks leases expired but never frees their blocks: every expiry leaks them."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def reap_expired(engine):
    now, reaped = engine.clock(), []
    for lease in engine.leases.active():
        if lease.expired(now):
            lease.state = LeaseState.EXPIRED  # BUG: engine.block_pool.free(...) missing
            reaped.append(lease.snapshot_id)
    return reaped

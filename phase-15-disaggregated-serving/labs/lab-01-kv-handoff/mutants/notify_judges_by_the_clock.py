"""notify_read_done judges the read by the clock, not by whether the blocks were still held."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_notify = notify_read_done


def notify_read_done(engine, snapshot_id):
    if snapshot_id in engine.leases:
        lease = engine.leases.get(snapshot_id)
        if lease.state == LeaseState.ACTIVE and lease.expired(engine.clock()):  # BUG: held is what counts
            reap_expired(engine)
    return _correct_notify(engine, snapshot_id)

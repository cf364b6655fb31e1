"""expiry gives the request back to the source, running on its held blocks: a reader that read in time runs it too."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def reap_expired(engine):
    now, reaped = engine.clock(), []
    for lease in engine.leases.active():
        if lease.expired(now) and lease.request.request_id not in engine.requests:
            lease.state = LeaseState.EXPIRED
            engine.admit_running(lease.request)  # BUG: vLLM's source finished the request; nothing resumes
            reaped.append(lease.snapshot_id)
    return reaped

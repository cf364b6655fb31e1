"""export_held frees the blocks at once (copy-out habits): the reader later reads blocks someone else reuses."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_export_held = export_held


def export_held(engine, request_id, lease_s=30.0):
    params = _correct_export_held(engine, request_id, lease_s)
    lease = engine.leases.get(params.snapshot.snapshot_id)
    engine.block_pool.free(lease.request.block_table)  # BUG: freed before anyone read them
    lease.request.block_table = []
    return params

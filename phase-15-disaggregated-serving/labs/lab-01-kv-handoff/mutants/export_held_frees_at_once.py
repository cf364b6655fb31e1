"""export_held frees the blocks at once (copy-out habits): the reader later reads blocks someone else reuses."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_export_held = export_held


def export_held(engine, request_id, lease_s=30.0):
    snapshot_id = _correct_export_held(engine, request_id, lease_s)
    request = engine.leases.get(snapshot_id).request
    engine.block_pool.free(request.block_table)  # BUG: freed before the reader committed
    return snapshot_id

"""export_held names every held block as remote_block_ids, the empty headroom block too."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_export_held = export_held


def export_held(engine, request_id, lease_s=30.0):
    params = _correct_export_held(engine, request_id, lease_s)
    table = engine.leases.get(params.snapshot.snapshot_id).request.block_table
    return dataclasses.replace(params, remote_block_ids=tuple(table))  # BUG: not only the K/V's blocks

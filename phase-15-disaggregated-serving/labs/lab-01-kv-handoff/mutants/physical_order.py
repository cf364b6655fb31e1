"""K/V copied in physical block order (sorted ids), not logical order: scrambled once the free list is."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_export = export_request


def export_request(engine, request_id):
    request = engine.requests[request_id]
    request.block_table = sorted(request.block_table)  # BUG: physical order, not logical
    return _correct_export(engine, request_id)

"""Migrate pre-checks the destination instead of rolling back: an unforeseeable failure loses the request.

It checks geometry and free blocks first; the wire failing or admission failing after allocation still
leaves the request nowhere."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def migrate(src, dst, request_id, transport=None):
    request = src.requests[request_id]
    need = -(-request.num_computed_tokens // dst.block_size)
    if need > dst.block_pool.num_free:
        raise OutOfBlocksError(need, dst.block_pool.num_free)
    if geometry_fingerprint(src.config) != geometry_fingerprint(dst.config):
        raise SnapshotError("geometry mismatch")
    snapshot = export_request(src, request_id)
    import_request(dst, snapshot if transport is None else transport(snapshot))  # BUG: no rollback
    return snapshot

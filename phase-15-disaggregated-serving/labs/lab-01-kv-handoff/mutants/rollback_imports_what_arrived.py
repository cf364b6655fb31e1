"""Rollback re-imports the snapshot that arrived, not the one that left: a corrupted delivery loses the request.

The corrupted copy is refused on the source too."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def migrate(src, dst, request_id, transport=None):
    snapshot = export_request(src, request_id)
    try:
        snapshot = snapshot if transport is None else transport(snapshot)  # BUG: overwrites the original
        import_request(dst, snapshot)
    except BaseException:
        import_request(src, snapshot)
        raise
    return snapshot

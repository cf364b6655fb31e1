"""Migrate without rollback: when the import fails, the request has already left the source and is lost."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def migrate(src, dst, request_id, transport=None):
    snapshot = export_request(src, request_id)
    import_request(dst, snapshot if transport is None else transport(snapshot))  # BUG: no rollback
    return snapshot

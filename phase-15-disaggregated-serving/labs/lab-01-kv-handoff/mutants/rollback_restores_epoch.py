"""After a rollback the request's epoch is set back to the snapshot's ("it never left"), so it is not one past the snapshot that failed to land."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def migrate(src, dst, request_id, transport=None):
    snapshot = export_request(src, request_id)
    try:
        arrived = snapshot if transport is None else transport(snapshot)
        import_request(dst, arrived)
    except BaseException:
        import_request(src, snapshot)
        src.requests[request_id].epoch = snapshot.epoch  # BUG: the rollback is treated as no move at all
        raise
    return snapshot

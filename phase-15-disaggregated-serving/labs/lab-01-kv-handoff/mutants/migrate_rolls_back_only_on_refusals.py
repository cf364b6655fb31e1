"""migrate rolls back only when the destination refuses (SnapshotError, OutOfBlocksError): a wire that raises loses the request."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def migrate(
    src: Engine,
    dst: Engine,
    request_id: str,
    transport: Callable[[RequestSnapshot], RequestSnapshot] | None = None,
) -> RequestSnapshot:
    snapshot = export_request(src, request_id)
    try:
        arrived = snapshot if transport is None else transport(snapshot)
        import_request(dst, arrived)
    except (SnapshotError, OutOfBlocksError):  # BUG: the wire's errors are not rolled back
        import_request(src, snapshot)  # what left, not what arrived; the source just freed these blocks
        raise
    return snapshot

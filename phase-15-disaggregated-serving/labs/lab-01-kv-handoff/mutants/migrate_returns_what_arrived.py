"""migrate returns the snapshot the wire delivered, not the one the source exported."""

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
    except BaseException:
        import_request(src, snapshot)  # what left, not what arrived; the source just freed these blocks
        raise
    return arrived  # BUG

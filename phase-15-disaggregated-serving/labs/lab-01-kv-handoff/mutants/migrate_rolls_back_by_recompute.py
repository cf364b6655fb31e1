"""migrate's rollback readmits the request by recompute: it is back, but waiting, and pays the prefill again."""

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
        readmit_by_recompute(src, snapshot)  # BUG: the K/V that left is thrown away
        raise
    return snapshot

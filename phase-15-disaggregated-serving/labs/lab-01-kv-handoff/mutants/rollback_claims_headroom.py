"""The rollback re-imports with import_request, headroom included: on a full source whose K/V fills its last block exactly it raises OutOfBlocksError and the request is lost."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def migrate(src, dst, request_id, transport=None):
    snapshot = export_request(src, request_id)
    home = dataclasses.replace(  # a private copy: the wire may write into what it is handed
        snapshot,
        kv=snapshot.kv.clone(),
        generator_state=None if snapshot.generator_state is None else snapshot.generator_state.clone(),
    )
    try:
        arrived = snapshot if transport is None else transport(snapshot)
        import_request(dst, arrived)
    except BaseException:
        import_request(src, home)  # BUG: claims the K/V's blocks plus headroom, maybe more than it freed
        raise
    return snapshot

"""Ships physical block ids and import reuses them, overwriting whoever holds those ids on the destination.

A different block size makes the ids meaningless too: block identity does not survive a move."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_export = export_request
_shipped_ids = {}


def export_request(engine, request_id):
    _shipped_ids[request_id] = list(engine.requests[request_id].block_table)  # BUG: ids travel
    return _correct_export(engine, request_id)


def import_request(engine, snapshot):
    validate_snapshot(engine, snapshot)
    block_ids = _shipped_ids[snapshot.request_id]  # BUG: the source's ids, reused as-is
    for b in block_ids:
        if b in engine.block_pool.free_block_ids:
            engine.block_pool.free_block_ids.remove(b)
        engine.block_pool._used.add(b)
    n, bs = snapshot.num_computed_tokens, engine.block_size
    for p in range(n):
        engine.kv_cache.kv[block_ids[p // bs], p % bs] = snapshot.kv[p]
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    request.generator.set_state(snapshot.generator_state)
    request.block_table = block_ids
    request.num_computed_tokens = n
    engine.admit_running(request)

"""The rollback restores from the very snapshot object handed to the wire: a wire that writes into it (then fails) poisons the restored K/V."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def migrate(src, dst, request_id, transport=None):
    held = len(src.requests[request_id].block_table) if request_id in src.requests else 0
    snapshot = export_request(src, request_id)
    try:
        arrived = snapshot if transport is None else transport(snapshot)
        import_request(dst, arrived)
    except BaseException:
        block_ids = src.block_pool.allocate(held)
        for p in range(snapshot.num_computed_tokens):  # BUG: reads what the wire may have written over
            src.kv_cache.kv[block_ids[p // src.block_size], p % src.block_size] = snapshot.kv[p]
        request = Request(
            request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )
        if request.generator is not None:
            request.generator.set_state(snapshot.generator_state)
        request.block_table = block_ids
        request.num_computed_tokens = snapshot.num_computed_tokens
        request.epoch = snapshot.epoch + 1
        src.admit_running(request)
        raise
    return snapshot

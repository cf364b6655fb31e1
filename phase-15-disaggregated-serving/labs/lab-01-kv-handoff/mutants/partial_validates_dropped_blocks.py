"""Validates the K/V as it arrived, failed blocks included: NaN in a block that is dropped anyway refuses the import."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def import_with_load_errors(engine, snapshot, failed_blocks):
    n, bs = snapshot.num_computed_tokens, engine.block_size
    bad = sorted(b for b in failed_blocks if not (isinstance(b, int) and 0 <= b < -(-n // bs)))
    if bad:
        raise ValueError(f"failed block indices {bad} out of range")
    if not failed_blocks:
        import_request(engine, snapshot)
        return 0
    keep = min(failed_blocks) * bs
    validate_snapshot(engine, snapshot)  # BUG: checks positions it is about to drop
    if keep == 0:
        readmit_by_recompute(engine, snapshot)
        return n
    block_ids = engine.block_pool.allocate(-(-(n + 1) // bs))
    try:
        for p in range(keep):
            engine.kv_cache.kv[block_ids[p // bs], p % bs] = snapshot.kv[p]
        _admit(engine, snapshot, block_ids, keep)
    except BaseException:
        engine.block_pool.free(block_ids)
        raise
    return n - keep


def _admit(engine, snapshot, block_ids, n):
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    if request.generator is not None:
        request.generator.set_state(snapshot.generator_state)
    request.block_table = block_ids
    request.num_computed_tokens = n
    request.epoch = snapshot.epoch + 1
    engine.admit_running(request)

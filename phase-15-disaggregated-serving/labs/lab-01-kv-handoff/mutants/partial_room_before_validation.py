"""import_with_load_errors checks for free blocks before validating the kept prefix: NaN in a kept block on a full engine is an OutOfBlocksError instead of a SnapshotError."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def import_with_load_errors(engine: Engine, snapshot: RequestSnapshot, failed_blocks: set[int]) -> int:
    n, block_size = snapshot.num_computed_tokens, engine.block_size
    bad = sorted(b for b in failed_blocks if not (isinstance(b, int) and 0 <= b < -(-n // block_size)))
    if bad:
        raise ValueError(f"failed block indices {bad} outside [0, {-(-n // block_size)}) for {n} positions")
    if not failed_blocks:
        import_request(engine, snapshot)
        return 0
    keep = min(failed_blocks) * block_size
    kv = snapshot.kv.clone() if isinstance(snapshot.kv, torch.Tensor) else snapshot.kv
    if isinstance(kv, torch.Tensor) and kv.shape[:1] == (n,):
        kv[keep:] = 0  # what is dropped is never checked: it may hold anything
    if keep > 0 and engine.block_pool.num_free < -(-(n + 1) // block_size):  # BUG: room first
        raise OutOfBlocksError(f"need {-(-(n + 1) // block_size)} blocks")
    validate_snapshot(engine, dataclasses.replace(snapshot, kv=kv))
    if keep == 0:
        readmit_by_recompute(engine, snapshot)
        return n
    block_ids = engine.block_pool.allocate(-(-(n + 1) // block_size))
    try:
        for p in range(keep):
            engine.kv_cache.kv[block_ids[p // block_size], p % block_size] = snapshot.kv[p]
        request = Request(
            snapshot.request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )
        if request.generator is not None:  # a counter-sampled request has none (task 8)
            request.generator.set_state(snapshot.generator_state)
        request.block_table = block_ids
        request.num_computed_tokens = keep
        request.epoch = snapshot.epoch + 1
        engine.admit_running(request)
    except BaseException:
        engine.block_pool.free(block_ids)
        raise
    return n - keep

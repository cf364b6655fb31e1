"""The room check forgets that free-but-cached hits sit on the free list: it touches them, runs out mid-way, and the undo reorders the free list."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def import_prefix_aware(engine, snapshot):
    validate_snapshot(engine, snapshot)
    n, bs, pool, cache = (
        snapshot.num_computed_tokens,
        engine.block_size,
        engine.block_pool,
        engine.prefix_cache,
    )
    hashes = full_block_hashes((*snapshot.prompt_token_ids, *snapshot.output_token_ids)[:n], bs)
    hit = cache.lookup(hashes) if cache is not None else []
    fresh = -(-(n + 1) // bs) - len(hit)
    if fresh > pool.num_free:  # BUG: the hits on the free list use up free blocks too
        raise OutOfBlocksError(fresh, pool.num_free)
    pool.touch(hit)
    try:
        new = pool.allocate(fresh)
    except OutOfBlocksError:
        pool.free(hit)
        raise
    block_ids = hit + new
    try:
        for p in range(len(hit) * bs, n):
            engine.kv_cache.kv[block_ids[p // bs], p % bs] = snapshot.kv[p]
        _admit(engine, snapshot, block_ids, n)
    except BaseException:
        pool.free(block_ids)
        raise
    for i in range(len(hit), len(hashes) if cache is not None else 0):
        cache.insert(hashes[i], block_ids[i])
    return PrefixImport(
        len(hit), -(-n // bs) - len(hit), (n - len(hit) * bs) * engine.config.kv_bytes_per_token
    )


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

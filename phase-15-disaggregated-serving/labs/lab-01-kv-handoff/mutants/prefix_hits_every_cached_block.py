"""The prefix hit is every cached block of the snapshot, not the run from block 0 to the first miss: after a gap a cached block is shared as the wrong position's K/V."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def import_prefix_aware(engine, snapshot):
    n, block_size = snapshot.num_computed_tokens, engine.block_size
    pool, cache = engine.block_pool, engine.prefix_cache
    tokens = (*snapshot.prompt_token_ids, *snapshot.output_token_ids)
    hashes = full_block_hashes(tokens[:n], block_size)
    hit = (
        [cache.get(h) for h in hashes if cache.get(h) is not None] if cache is not None else []
    )  # BUG: every cached block, not the run from block 0
    kv = snapshot.kv
    if hit and isinstance(kv, torch.Tensor) and kv.shape[:1] == (n,):
        kv = kv.clone()
        kv[: len(hit) * block_size] = 0  # the hit positions are never read: they may hold anything
    validate_snapshot(engine, dataclasses.replace(snapshot, kv=kv))
    fresh = -(-(n + 1) // block_size) - len(hit)
    if fresh + pool.num_evictable(hit) > pool.num_free:  # hits on the free list take free blocks too
        raise OutOfBlocksError(fresh + pool.num_evictable(hit), pool.num_free)
    pool.touch(hit)  # first: allocating could otherwise hand a free-but-cached hit out as a new block
    block_ids = hit + pool.allocate(fresh)
    try:
        kv = engine.kv_cache.kv
        for p in range(len(hit) * block_size, n):
            kv[block_ids[p // block_size], p % block_size] = snapshot.kv[p]
        request = Request(
            snapshot.request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )
        if request.generator is not None:  # a counter-sampled request has none (task 8)
            request.generator.set_state(snapshot.generator_state)
        request.block_table = block_ids
        request.num_computed_tokens = n
        request.epoch = snapshot.epoch + 1
        engine.admit_running(request)
    except BaseException:
        pool.free(block_ids)  # one reference each: the hits go back to their other holders (or the cache)
        raise
    for i in range(len(hit), len(hashes) if cache is not None else 0):  # name what was written: full blocks
        cache.insert(hashes[i], block_ids[i])
    return PrefixImport(
        reused_blocks=len(hit),
        shipped_blocks=-(-n // block_size) - len(hit),
        shipped_bytes=(n - len(hit) * block_size) * engine.config.kv_bytes_per_token,
    )

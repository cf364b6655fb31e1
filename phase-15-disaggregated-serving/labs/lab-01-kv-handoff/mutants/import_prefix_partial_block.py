"""The partial last block is hashed and cached too: a later import shares a block both requests keep writing into."""

from labkit.mutants import inherit_solution
from minivllm import hash_block_tokens

inherit_solution(globals())


def import_prefix_aware(engine, snapshot):
    validate_snapshot(engine, snapshot)
    n, bs, pool, cache = (
        snapshot.num_computed_tokens,
        engine.block_size,
        engine.block_pool,
        engine.prefix_cache,
    )
    tokens, hashes, parent = (*snapshot.prompt_token_ids, *snapshot.output_token_ids), [], None
    for i in range(-(-n // bs)):  # BUG: every block with K/V, the partial last one included
        parent = hash_block_tokens(parent, tokens[i * bs : min(n, (i + 1) * bs)])
        hashes.append(parent)
    hit = cache.lookup(hashes) if cache is not None else []
    fresh = -(-(n + 1) // bs) - len(hit)
    if fresh + pool.num_evictable(hit) > pool.num_free:
        raise OutOfBlocksError(fresh + pool.num_evictable(hit), pool.num_free)
    pool.touch(hit)
    block_ids = hit + pool.allocate(fresh)
    try:
        for p in range(min(n, len(hit) * bs), n):
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

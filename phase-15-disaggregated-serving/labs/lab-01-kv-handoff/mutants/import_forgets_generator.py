"""Import never restores the generator state: the moved request's sampling restarts from its seed.

Greedy requests are unaffected, so a greedy-only check passes; seeded sampling replays old draws."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def import_request(engine, snapshot):
    validate_snapshot(engine, snapshot)
    n, bs = snapshot.num_computed_tokens, engine.block_size
    block_ids = engine.block_pool.allocate(-(-(n + 1) // bs))
    try:
        for p in range(n):
            engine.kv_cache.kv[block_ids[p // bs], p % bs] = snapshot.kv[p]
        request = Request(
            snapshot.request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )  # BUG: no request.generator.set_state(snapshot.generator_state)
        request.block_table = block_ids
        request.num_computed_tokens = n
        request.epoch = snapshot.epoch + 1
        engine.admit_running(request)
    except BaseException:
        engine.block_pool.free(block_ids)
        raise

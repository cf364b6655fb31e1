"""Import validates first but does not give the blocks back when something fails after allocating them."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def import_request(engine, snapshot):
    validate_snapshot(engine, snapshot)
    n, bs = snapshot.num_computed_tokens, engine.block_size
    block_ids = engine.block_pool.allocate(-(-(n + 1) // bs))
    for p in range(n):  # BUG: no try/except freeing block_ids if the copy or the admission fails
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
    request.epoch = snapshot.epoch + 1
    engine.admit_running(request)

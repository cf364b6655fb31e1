"""Import writes only the full blocks: the K/V of the last, partial block is never written."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def import_request(engine, snapshot):
    validate_snapshot(engine, snapshot)
    n, bs = snapshot.num_computed_tokens, engine.block_size
    block_ids = engine.block_pool.allocate(-(-(n + 1) // bs))
    full = n // bs  # BUG: the n % bs tokens of the last block are skipped
    for i in range(full):
        engine.kv_cache.kv[block_ids[i]] = snapshot.kv[i * bs : (i + 1) * bs]
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

"""export_held leaves the request running on the source: once pulled, it runs on two engines."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_export_held = export_held


def export_held(engine, request_id, lease_s=30.0):
    request = engine.requests[request_id] if request_id in engine.requests else None
    params = _correct_export_held(engine, request_id, lease_s)
    if request is not None:  # BUG: "hold" read as "keep it going here too", on blocks of its own
        twin = Request(
            request.request_id, request.prompt_token_ids, request.sampling_params, request.output_token_ids
        )
        if twin.generator is not None:
            twin.generator.set_state(request.generator.get_state())
        twin.block_table = engine.block_pool.allocate(len(request.block_table))
        for new, old in zip(twin.block_table, request.block_table, strict=True):
            engine.kv_cache.kv[new] = engine.kv_cache.kv[old]
        twin.num_computed_tokens, twin.epoch = request.num_computed_tokens, request.epoch
        engine.admit_running(twin)
    return params

"""Export frees the blocks but leaves the request live on the source, pointing at freed blocks."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def export_request(engine, request_id):
    request = engine.requests[request_id]
    n = request.num_computed_tokens
    kv = engine.kv_cache.kv[torch.tensor(request.block_table)].flatten(0, 1)[:n]
    snapshot = RequestSnapshot(
        request_id=request_id,
        prompt_token_ids=tuple(request.prompt_token_ids),
        output_token_ids=tuple(request.output_token_ids),
        num_computed_tokens=n,
        sampling_params=request.sampling_params,
        generator_state=request.generator.get_state(),
        kv=kv,
        geometry=geometry_fingerprint(engine.config),
        snapshot_id=new_snapshot_id(request_id),
        epoch=request.epoch,
    )
    engine.block_pool.free(request.block_table)  # BUG: no engine.detach_request(request_id)
    return snapshot

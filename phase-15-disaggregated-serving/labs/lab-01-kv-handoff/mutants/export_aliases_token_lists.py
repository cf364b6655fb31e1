"""Export hands over the request's live output list instead of a tuple: the snapshot is not the caller's to keep."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def export_request(engine, request_id):
    if request_id not in engine.requests:
        raise KeyError(f"no live request {request_id!r} to export")
    request = engine.requests[request_id]
    if request.status != RequestStatus.RUNNING:
        raise ValueError(f"{request_id} is {request.status.value}: only a running request has KV to ship")
    n = request.num_computed_tokens
    kv = engine.kv_cache.kv[torch.tensor(request.block_table)].flatten(0, 1)[:n]
    snapshot = RequestSnapshot(
        request_id=request_id,
        prompt_token_ids=tuple(request.prompt_token_ids),
        output_token_ids=request.output_token_ids,  # BUG: the request's own list, not a tuple copy
        num_computed_tokens=n,
        sampling_params=request.sampling_params,
        generator_state=None if request.generator is None else request.generator.get_state(),
        kv=kv,
        geometry=geometry_fingerprint(engine.config),
        snapshot_id=new_snapshot_id(request_id),
        epoch=request.epoch,
    )
    engine.detach_request(request_id)
    engine.block_pool.free(request.block_table)
    request.block_table = []
    return snapshot

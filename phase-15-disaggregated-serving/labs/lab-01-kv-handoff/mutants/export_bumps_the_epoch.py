"""export_request moves the epoch on at export: with the import's +1 a move counts twice."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def export_request(engine: Engine, request_id: str) -> RequestSnapshot:
    if request_id not in engine.requests:
        raise KeyError(f"no live request {request_id!r} to export (live: {sorted(engine.requests)})")
    request = engine.requests[request_id]
    if request.status != RequestStatus.RUNNING:
        raise ValueError(f"{request_id} is {request.status.value}: only a running request has KV to ship")
    n = request.num_computed_tokens
    # Gather whole blocks in block-table order (= logical order): one copy. Then cut the unused tail of
    # the last block off the token axis, which is a view of that same copy.
    kv = engine.kv_cache.kv[torch.tensor(request.block_table)].flatten(0, 1)[:n]
    snapshot = RequestSnapshot(
        request_id=request_id,
        prompt_token_ids=tuple(request.prompt_token_ids),
        output_token_ids=tuple(request.output_token_ids),
        num_computed_tokens=n,
        sampling_params=request.sampling_params,
        generator_state=None if request.generator is None else request.generator.get_state(),
        kv=kv,
        geometry=geometry_fingerprint(engine.config),
        snapshot_id=new_snapshot_id(request_id),
        epoch=request.epoch + 1,  # BUG: the import moves it on
    )
    engine.detach_request(request_id)
    engine.block_pool.free(request.block_table)
    request.block_table = []
    return snapshot

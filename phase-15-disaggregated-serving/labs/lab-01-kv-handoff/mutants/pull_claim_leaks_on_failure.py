"""start_pull does not give its blocks back when taking the request in fails after the claim."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def start_pull(engine, params):
    snapshot, c = params.snapshot, engine.config
    n = snapshot.num_computed_tokens
    placeholder = torch.zeros((n, c.num_layers, 2, c.num_kv_heads, c.head_dim), dtype=c.dtype)
    validate_snapshot(engine, dataclasses.replace(snapshot, kv=placeholder))
    if params.kv_layout != engine.kv_layout or engine.block_size % params.remote_block_size:
        raise SnapshotError("layout or block size")
    if len(params.remote_block_ids) != -(-n // params.remote_block_size):
        raise SnapshotError("block count")
    block_ids = engine.block_pool.allocate(-(-(n + 1) // engine.block_size))
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    if request.generator is not None:
        request.generator.set_state(snapshot.generator_state)
    request.block_table = block_ids
    request.epoch = snapshot.epoch + 1
    engine.await_remote_kv(request)  # BUG: no try/except: a failure here leaks block_ids

"""readmit_by_recompute queues the request at the snapshot's epoch: a recompute is a move too, one epoch on."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def readmit_by_recompute(engine: Engine, snapshot: RequestSnapshot) -> None:
    c, n = engine.config, snapshot.num_computed_tokens
    placeholder = torch.zeros((max(n, 0), c.num_layers, 2, c.num_kv_heads, c.head_dim), dtype=c.dtype)
    validate_snapshot(engine, dataclasses.replace(snapshot, kv=placeholder))  # everything but the K/V
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    if request.generator is not None:  # a counter-sampled request has none: its seed is enough
        request.generator.set_state(snapshot.generator_state)  # the stream continues where it left off
    request.epoch = snapshot.epoch  # BUG
    engine.enqueue_waiting(request)  # KV discarded: the next step recomputes every token

"""The never-fits check counts prompt + max_tokens - 2 positions: a request one position too long for the engine passes validation and is refused late by the engine."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def validate_snapshot(engine: Engine, snapshot: RequestSnapshot) -> None:
    if snapshot.request_id in engine.requests:
        raise SnapshotError(
            f"request {snapshot.request_id!r} is already live on the destination (imported twice?)"
        )
    seen = engine.epochs.get(snapshot.request_id, 0)
    if snapshot.epoch < seen:
        raise SnapshotError(
            f"stale snapshot of {snapshot.request_id!r}: epoch {snapshot.epoch}, but this engine has seen the "
            f"request at epoch {seen} (it moved on since this snapshot was taken)"
        )
    want_geometry = geometry_fingerprint(engine.config)
    if snapshot.geometry != want_geometry:
        raise SnapshotError(f"geometry mismatch: snapshot {snapshot.geometry} vs destination {want_geometry}")
    c, n, params = engine.config, snapshot.num_computed_tokens, snapshot.sampling_params
    prompt, output = snapshot.prompt_token_ids, snapshot.output_token_ids
    if not prompt or not output or n != snapshot.num_tokens - 1:
        raise SnapshotError(
            f"a running request has every token but the last sampled one computed: {len(prompt)} "
            f"prompt + {len(output)} output tokens, num_computed_tokens={n}"
        )
    if len(output) >= params.max_tokens:
        raise SnapshotError(f"the request is finished: {len(output)} of max_tokens={params.max_tokens}")
    bad = [t for t in (*prompt, *output) if not 0 <= t < c.vocab_size]
    if bad:
        raise SnapshotError(f"token ids {bad[:5]} outside the vocabulary [0, {c.vocab_size})")
    peak = -(-(len(prompt) + params.max_tokens - 2) // engine.block_size)  # BUG: one short
    if peak > engine.num_blocks:
        raise SnapshotError(
            f"the request peaks at {len(prompt) + params.max_tokens - 1} positions = {peak} blocks of "
            f"{engine.block_size}; this engine has {engine.num_blocks} in all"
        )
    rng, state = params.rng, snapshot.generator_state
    if (state is None) != (rng == "counter"):
        raise SnapshotError(
            f"rng={rng!r} with {'no' if state is None else 'a'} generator state: a stateful request must carry its "
            "generator's state (from the seed it would replay draws already made); a counter one has none"
        )
    if state is not None:
        try:
            torch.Generator().set_state(state)  # a scratch generator: touches nothing
        except (RuntimeError, TypeError) as exc:
            raise SnapshotError(f"generator state refused by torch.Generator: {exc}") from None
    want_shape = (n, c.num_layers, 2, c.num_kv_heads, c.head_dim)
    if not isinstance(snapshot.kv, torch.Tensor) or tuple(snapshot.kv.shape) != want_shape:
        got = tuple(snapshot.kv.shape) if isinstance(snapshot.kv, torch.Tensor) else type(snapshot.kv)
        raise SnapshotError(f"kv must be [tokens, layers, 2, kv_heads, head_dim] = {want_shape}, got {got}")
    if snapshot.kv.dtype != c.dtype:
        raise SnapshotError(f"kv dtype {snapshot.kv.dtype} != destination dtype {c.dtype}")
    if not bool(torch.isfinite(snapshot.kv).all()):
        where = sorted({int(p) for p in (~torch.isfinite(snapshot.kv)).nonzero()[:, 0]})
        raise SnapshotError(f"kv holds NaN or infinity at positions {where[:5]}")

"""Recompute restores a generator state unconditionally: a counter request (no generator, None state) cannot be readmitted."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def readmit_by_recompute(engine, snapshot):
    if snapshot.request_id in engine.requests:
        raise SnapshotError(f"request {snapshot.request_id!r} is already live on this engine")
    if snapshot.geometry != geometry_fingerprint(engine.config):
        raise SnapshotError("geometry mismatch")
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    request.generator.set_state(snapshot.generator_state)  # BUG: a counter request has no generator
    request.epoch = snapshot.epoch + 1
    engine.enqueue_waiting(request)

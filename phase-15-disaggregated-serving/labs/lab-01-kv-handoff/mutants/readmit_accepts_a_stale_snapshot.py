"""readmit_by_recompute checks only the id, the geometry and the generator state: a stale snapshot revives a request that moved on (and bad tokens fail late)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def readmit_by_recompute(engine: Engine, snapshot: RequestSnapshot) -> None:
    if snapshot.request_id in engine.requests or snapshot.geometry != geometry_fingerprint(engine.config):
        raise SnapshotError("cannot continue here")
    if (snapshot.generator_state is None) != (snapshot.sampling_params.rng == "counter"):
        raise SnapshotError("generator state")  # BUG: no epoch, token or peak checks
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    if request.generator is not None:  # a counter-sampled request has none: its seed is enough
        request.generator.set_state(snapshot.generator_state)  # the stream continues where it left off
    request.epoch = snapshot.epoch + 1
    engine.enqueue_waiting(request)  # KV discarded: the next step recomputes every token

"""readmit_by_recompute validates the K/V it is about to discard: a poisoned or truncated K/V is refused for nothing."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def readmit_by_recompute(engine: Engine, snapshot: RequestSnapshot) -> None:
    validate_snapshot(engine, snapshot)  # BUG: the K/V is never used, so it is no reason to refuse
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

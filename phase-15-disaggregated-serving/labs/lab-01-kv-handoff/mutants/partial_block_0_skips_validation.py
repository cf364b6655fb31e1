"""With block 0 failed, import_with_load_errors queues the request without validating it ("nothing is kept, so nothing to check"): a stateful snapshot without its generator state restarts from the seed, a stale one is revived."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_import_with_load_errors = import_with_load_errors


def import_with_load_errors(engine, snapshot, failed_blocks):
    n, block_size = snapshot.num_computed_tokens, engine.block_size
    if 0 in failed_blocks and all(isinstance(b, int) and 0 <= b < -(-n // block_size) for b in failed_blocks):
        request = Request(  # BUG: no validation on this path
            snapshot.request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )
        if request.generator is not None and snapshot.generator_state is not None:
            request.generator.set_state(snapshot.generator_state)
        request.epoch = snapshot.epoch + 1
        engine.enqueue_waiting(request)
        return n
    return _correct_import_with_load_errors(engine, snapshot, failed_blocks)

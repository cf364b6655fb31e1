"""start_pull requires the SOURCE's block size to be a multiple of the reader's: vLLM's rule the wrong way round."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_start_pull = start_pull


def start_pull(engine, params):
    remote = params.remote_block_size
    if remote % engine.block_size:  # BUG: the rule is local % remote == 0
        raise SnapshotError("block sizes do not divide")
    # past the (wrong) check, the solution's own ratio check is bypassed by presenting a divisor
    fake = (
        params
        if engine.block_size % remote == 0
        else dataclasses.replace(
            params, remote_block_size=1, remote_block_ids=tuple(range(params.snapshot.num_computed_tokens))
        )
    )
    _correct_start_pull(engine, fake)

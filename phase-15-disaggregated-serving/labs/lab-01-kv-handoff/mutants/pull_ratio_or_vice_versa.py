"""start_pull accepts block sizes that divide either way ("or vice versa", as vLLM's assert message says): 8 -> 4 is let through."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_start_pull = start_pull


def start_pull(engine, params):
    remote = params.remote_block_size
    if (
        engine.block_size % remote and remote % engine.block_size
    ):  # BUG: vLLM's assert only allows local % remote == 0
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

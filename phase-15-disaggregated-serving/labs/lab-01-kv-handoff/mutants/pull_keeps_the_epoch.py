"""start_pull admits the request at the params' epoch, not one move further: a replayed older handoff is not stale."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_start_pull = start_pull


def start_pull(engine, params):
    _correct_start_pull(engine, params)
    rid = params.snapshot.request_id
    engine.requests[rid].epoch = params.snapshot.epoch  # BUG: one move further is epoch + 1
    engine.epochs[rid] = params.snapshot.epoch

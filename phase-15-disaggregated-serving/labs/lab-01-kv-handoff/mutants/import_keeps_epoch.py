"""Import keeps the snapshot's epoch instead of moving it one on: the engine cannot tell an old snapshot from a new one."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_import = import_request


def import_request(engine, snapshot):
    _correct_import(engine, snapshot)
    request = engine.requests[snapshot.request_id]
    request.epoch = snapshot.epoch  # BUG: should be snapshot.epoch + 1
    engine.epochs[snapshot.request_id] = snapshot.epoch

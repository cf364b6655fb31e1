"""Every imported request gets the same module-level generator: two sampled imports mix their streams."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_GENERATOR = torch.Generator()  # BUG: one generator for every imported request
_correct_import = import_request


def import_request(engine, snapshot):
    _correct_import(engine, snapshot)
    request = engine.requests[snapshot.request_id]
    _GENERATOR.set_state(snapshot.generator_state)
    request.generator = _GENERATOR

"""Import claims the blocks before validating: a rejected snapshot leaves its blocks allocated."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_import = import_request


def import_request(engine, snapshot):
    n = snapshot.num_computed_tokens
    engine.block_pool.allocate(-(-n // engine.block_size))  # BUG: claimed before validation, never returned
    _correct_import(engine, snapshot)

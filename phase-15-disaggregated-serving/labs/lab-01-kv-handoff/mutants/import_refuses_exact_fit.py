"""Import pre-checks the free list with >= instead of >: an import that exactly fits is refused."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_import = import_request


def import_request(engine, snapshot):
    validate_snapshot(engine, snapshot)
    need = -(-snapshot.num_computed_tokens // engine.block_size)
    if need >= engine.block_pool.num_free:  # BUG: off by one; need == num_free fits
        raise OutOfBlocksError(need, engine.block_pool.num_free)
    _correct_import(engine, snapshot)

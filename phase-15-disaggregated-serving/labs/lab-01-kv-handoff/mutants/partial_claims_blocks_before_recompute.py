"""Checks for room for the whole import before looking at which block failed: with block 0 failed (a
recompute that holds no blocks) a full pool still raises OutOfBlocksError."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_import_with_load_errors = import_with_load_errors  # noqa: F821 - the solution's


def import_with_load_errors(engine, snapshot, failed_blocks):
    need = -(-(snapshot.num_computed_tokens + 1) // engine.block_size)
    if failed_blocks and need > engine.block_pool.num_free:  # BUG: a recompute needs no blocks now
        raise OutOfBlocksError(need, engine.block_pool.num_free)
    return _solution_import_with_load_errors(engine, snapshot, failed_blocks)

"""on a load failure finish_pull forgets to free the blocks it claimed: they leak."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull

_correct_finish = finish_pull


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    free = dst.block_pool.free
    dst.block_pool.free = lambda ids: None  # BUG: the claimed blocks are dropped from the table, never freed
    try:
        outcome = _correct_finish(dst, src, params, clock_offset, margin_s, policy)
    finally:
        dst.block_pool.free = free
    return outcome

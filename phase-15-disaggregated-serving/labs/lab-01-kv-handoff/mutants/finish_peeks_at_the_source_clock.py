"""The reader's deadline check reads the source's clock (which a real reader cannot see) instead of its own clock plus its offset estimate."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_finish_pull = finish_pull


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    peeked = src.clock() - dst.clock()  # BUG: the true offset, not the reader's estimate
    return _correct_finish_pull(dst, src, params, clock_offset=peeked, margin_s=margin_s, policy=policy)

"""finish_pull subtracts the clock offset instead of adding it: the reader's guess of the source's clock is off by twice the skew."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull

_correct_finish = finish_pull


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    return _correct_finish(dst, src, params, -clock_offset, margin_s, policy)  # BUG: the sign of the offset

"""finish_pull compares its own clock with the source's deadline, ignoring the clock offset."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull

_correct_finish = finish_pull


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    return _correct_finish(dst, src, params, 0.0, margin_s, policy)  # BUG: clock_offset dropped

"""finish_pull's deadline check leaves no margin: a read that starts 1 s before the deadline goes ahead."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull

_correct_finish = finish_pull


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    return _correct_finish(dst, src, params, clock_offset, 0.0, policy)  # BUG: margin_s ignored

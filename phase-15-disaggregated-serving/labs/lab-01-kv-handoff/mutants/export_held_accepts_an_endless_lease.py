"""export_held accepts lease_s=inf: a lease that never expires holds its blocks forever."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_export_held = export_held


def export_held(engine, request_id, lease_s=30.0):
    if lease_s == math.inf:  # BUG: only "> 0" checked; infinity passes
        return _correct_export_held(engine, request_id, 1e300)
    return _correct_export_held(engine, request_id, lease_s)

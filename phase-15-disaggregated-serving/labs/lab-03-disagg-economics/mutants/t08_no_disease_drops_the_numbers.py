"""With no disease the Decision's freight, toll and penalty are left at 0: the numbers are carried only when the wire is weighed."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

import dataclasses

_weighed = should_disaggregate


def should_disaggregate(*args, **kwargs):
    d = _weighed(*args, **kwargs)
    if d.verdict == Verdict.NO_NO_DISEASE and d.spared_ms > 0:
        return dataclasses.replace(d, kv_bytes=0, toll_ms=0.0, penalty_ratio=0.0)
    return d

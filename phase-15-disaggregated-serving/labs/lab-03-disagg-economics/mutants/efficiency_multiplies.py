"""Link efficiency applied the wrong way round: a half-efficient link looks twice as fast."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct = transfer_ms


def transfer_ms(nbytes, link_gbps, efficiency=1.0):
    return _correct(nbytes, link_gbps, 1.0) * efficiency  # BUG: should divide by efficiency

"""One host recognised only by equal strings: localhost on one side and ::1 on the other hide a port clash."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def _same_host(a, b):
    return a == b

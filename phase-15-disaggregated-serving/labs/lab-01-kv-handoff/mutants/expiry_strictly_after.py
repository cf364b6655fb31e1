"""Expiry tested with > instead of >=: at exactly the deadline the lease still reads, commits, and is not released."""

from labkit.mutants import inherit_solution
from minivllm import Lease

inherit_solution(globals())

Lease.expired = lambda self, now: now > self.deadline  # BUG: the deadline instant still counts as alive

"""read_held checks the lease's state but not its deadline: a reader gets K/V after the lease expired."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_read = read_held


def read_held(engine, snapshot_id):
    lease = engine.leases.get(snapshot_id)
    deadline, lease.deadline = lease.deadline, float("inf")  # BUG: the deadline is never consulted
    try:
        return _correct_read(engine, snapshot_id)
    finally:
        lease.deadline = deadline

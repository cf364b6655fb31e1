"""pull never commits: the lease stays active, so the same handoff can be pulled into a second engine (a fork)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def pull(src, dst, snapshot_id):
    snapshot = read_held(src, snapshot_id)
    import_request(dst, snapshot)  # BUG: no commit_held(src, snapshot_id)
    return snapshot

"""pull commits on the source before importing: when the import fails, the request is gone from everywhere."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def pull(src, dst, snapshot_id):
    snapshot = read_held(src, snapshot_id)
    commit_held(src, snapshot_id)  # BUG: committed before the destination has the request
    import_request(dst, snapshot)
    return snapshot

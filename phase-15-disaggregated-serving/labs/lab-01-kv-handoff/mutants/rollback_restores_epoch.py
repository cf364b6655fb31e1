"""After a rollback the request's epoch is set back to the snapshot's ("it never left"), so it is not one past the snapshot that failed to land."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_migrate = migrate


def migrate(src, dst, request_id, transport=None):
    handed = []

    def wire(snapshot):
        handed.append(snapshot)
        return snapshot if transport is None else transport(snapshot)

    try:
        return _correct_migrate(src, dst, request_id, transport=wire)
    except BaseException:
        src.requests[request_id].epoch = handed[0].epoch  # BUG: the rollback is treated as no move at all
        raise

"""migrate rolls back but returns normally: the caller believes the request moved."""

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
        return handed[0]  # BUG: rolled back, but the error is swallowed

"""migrate returns the snapshot the wire delivered, not the one the source exported."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_migrate = migrate


def migrate(src, dst, request_id, transport=None):
    arrived = []

    def wire(snapshot):
        arrived.append(snapshot if transport is None else transport(snapshot))
        return arrived[-1]

    _correct_migrate(src, dst, request_id, transport=wire)
    return arrived[-1]  # BUG

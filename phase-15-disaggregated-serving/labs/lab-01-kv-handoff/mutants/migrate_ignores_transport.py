"""Migrate never calls the transport: the snapshot 'arrives' without crossing the wire."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_migrate = migrate


def migrate(src, dst, request_id, transport=None):
    return _correct_migrate(src, dst, request_id)  # BUG: transport dropped

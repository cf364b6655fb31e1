"""Migrate moves the request but forgets to return the snapshot it shipped."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_migrate = migrate


def migrate(src, dst, request_id, transport=None):
    _correct_migrate(src, dst, request_id, transport)  # BUG: return value dropped

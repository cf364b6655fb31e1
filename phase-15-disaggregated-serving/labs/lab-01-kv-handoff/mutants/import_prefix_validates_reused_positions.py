"""import_prefix_aware validates the whole snapshot before the lookup: NaN in the K/V of positions the
destination reuses from its prefix cache (never read) gets the import refused."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_import_prefix_aware = import_prefix_aware  # noqa: F821 - the solution's, from inherit_solution


def import_prefix_aware(engine, snapshot):
    validate_snapshot(engine, snapshot)  # BUG: refuses what is never read
    return _solution_import_prefix_aware(engine, snapshot)

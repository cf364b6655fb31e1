"""A snapshot at the latest epoch the engine has seen counts as stale ('<=' for '<'): a rollback is refused."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_validate = validate_snapshot  # noqa: F821 - defined by inherit_solution


def validate_snapshot(engine, snapshot):
    if snapshot.epoch <= engine.epochs.get(snapshot.request_id, -1) and snapshot.request_id in engine.epochs:
        raise SnapshotError(  # noqa: F821
            f"stale snapshot of {snapshot.request_id!r}: epoch {snapshot.epoch}"
        )
    return _solution_validate(engine, snapshot)

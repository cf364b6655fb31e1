"""Validation still demands a generator state torch.Generator accepts from every snapshot, so a counter request (None) cannot move."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_validate_snapshot = validate_snapshot


def validate_snapshot(engine, snapshot):
    _validate_snapshot(engine, snapshot)
    try:  # BUG: the stateful-only check applied to every request
        torch.Generator().set_state(snapshot.generator_state)
    except (RuntimeError, TypeError) as exc:
        raise SnapshotError(f"generator state refused by torch.Generator: {exc}") from None

"""Validation does not try the generator state: a bad one fails later, at set_state, with torch's error.

The caller gets a RuntimeError instead of a SnapshotError."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_validate = validate_snapshot


def validate_snapshot(engine, snapshot):
    good_state = torch.Generator().get_state()  # BUG: the state that will be restored is never checked
    _correct_validate(engine, dataclasses.replace(snapshot, generator_state=good_state))

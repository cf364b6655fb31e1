"""Validation never compares epochs: a stale snapshot is imported after the request has moved on."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_validate = validate_snapshot


def validate_snapshot(engine, snapshot):
    seen = engine.epochs.get(snapshot.request_id, 0)
    _correct_validate(engine, dataclasses.replace(snapshot, epoch=max(snapshot.epoch, seen)))  # BUG

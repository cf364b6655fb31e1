"""Validation skips the dtype: a float64 snapshot is silently cast into a float32 cache."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_validate = validate_snapshot


def validate_snapshot(engine, snapshot):
    # BUG: pretend the dtype matched
    _correct_validate(engine, dataclasses.replace(snapshot, kv=snapshot.kv.to(engine.config.dtype)))

"""Validation never looks at the values: a snapshot with NaN or inf K/V is imported and poisons decoding."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_validate = validate_snapshot


def validate_snapshot(engine, snapshot):
    kv = snapshot.kv
    if isinstance(kv, torch.Tensor) and kv.is_floating_point():
        kv = torch.nan_to_num(kv, nan=0.0, posinf=0.0, neginf=0.0)  # BUG: the finiteness check never fires
    _correct_validate(engine, dataclasses.replace(snapshot, kv=kv))

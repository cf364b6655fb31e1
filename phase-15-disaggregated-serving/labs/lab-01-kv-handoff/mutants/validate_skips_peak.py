"""Validation ignores the request's peak (prompt + max_tokens - 1): a request that can never fit is refused late.

Admission refuses it after the blocks were claimed, with the engine's ValueError, not a SnapshotError."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_validate = validate_snapshot


def validate_snapshot(engine, snapshot):
    class Roomy:  # BUG: the peak check sees an engine with room for anything
        def __getattr__(self, name):
            return getattr(engine, name)

        num_blocks = 10**9

    _correct_validate(Roomy(), snapshot)

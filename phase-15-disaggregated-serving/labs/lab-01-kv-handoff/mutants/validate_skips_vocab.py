"""Validation does not range-check token ids: a token outside the vocabulary is refused only at admission.

By then the blocks were claimed, and the error is the engine's ValueError instead of a SnapshotError."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_validate = validate_snapshot


def validate_snapshot(engine, snapshot):
    vocab = engine.config.vocab_size
    clipped = dataclasses.replace(  # BUG: token ids are never range-checked
        snapshot,
        prompt_token_ids=tuple(t % vocab for t in snapshot.prompt_token_ids),
        output_token_ids=tuple(t % vocab for t in snapshot.output_token_ids),
    )
    _correct_validate(engine, clipped)

"""Validation accepts a request that already has max_tokens outputs; admission refuses it too late."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_validate = validate_snapshot


def validate_snapshot(engine, snapshot):
    params = snapshot.sampling_params
    if len(snapshot.output_token_ids) >= params.max_tokens:  # BUG: "finished" not treated as an error
        params = dataclasses.replace(params, max_tokens=len(snapshot.output_token_ids) + 1)
    _correct_validate(engine, dataclasses.replace(snapshot, sampling_params=params))

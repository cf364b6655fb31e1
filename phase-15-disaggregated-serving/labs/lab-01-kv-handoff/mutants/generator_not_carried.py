"""Generator state not carried: reseeded from the seed, so greedy survives the move but sampling does not.

The destination replays the request's random stream from its start."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_export = export_request


def export_request(engine, request_id):
    snapshot = _correct_export(engine, request_id)
    fresh = torch.Generator().manual_seed(snapshot.sampling_params.seed).get_state()  # BUG
    return dataclasses.replace(snapshot, generator_state=fresh)

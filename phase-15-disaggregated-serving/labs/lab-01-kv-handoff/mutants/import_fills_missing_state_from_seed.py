"""Import accepts a stateful snapshot without generator state and restores the seed's state: the stream restarts and replays draws."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())

_import_request = import_request


def import_request(engine, snapshot):
    if snapshot.generator_state is None and snapshot.sampling_params.rng == "stateful":
        fresh = torch.Generator().manual_seed(snapshot.sampling_params.seed)  # BUG: the wrong state
        snapshot = dataclasses.replace(snapshot, generator_state=fresh.get_state())
    _import_request(engine, snapshot)

"""Export always ships a generator state: for a counter request (no generator) it makes one from the seed."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_export_request = export_request


def export_request(engine, request_id):
    request = engine.requests.get(request_id)
    snapshot = _export_request(engine, request_id)
    if request is not None and request.generator is None:  # BUG: "so import always has a state to restore"
        seeded = torch.Generator().manual_seed(request.sampling_params.seed)
        snapshot = RequestSnapshot(**{**snapshot.__dict__, "generator_state": seeded.get_state()})
    return snapshot

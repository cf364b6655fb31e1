"""Export gathers into one reused staging buffer and returns a view of it: the next export overwrites it."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())
_staging = {}
_correct_export = export_request


def export_request(engine, request_id):
    snapshot = _correct_export(engine, request_id)
    buf = _staging.setdefault(snapshot.kv.shape[1:], torch.empty(4096, *snapshot.kv.shape[1:]))
    n = snapshot.num_computed_tokens
    buf[:n] = snapshot.kv  # BUG: a buffer shared by every export, handed out as a view
    return dataclasses.replace(snapshot, kv=buf[:n])

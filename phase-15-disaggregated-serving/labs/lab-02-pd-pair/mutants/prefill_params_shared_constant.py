"""The prefill body gets PREFILL_KV_TRANSFER_PARAMS itself, not a copy: one request's edit leaks into the next."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_prefill_request = prefill_request


def prefill_request(body, request_id):
    new, headers = _solution_prefill_request(body, request_id)
    new["kv_transfer_params"] = PREFILL_KV_TRANSFER_PARAMS
    return new, headers

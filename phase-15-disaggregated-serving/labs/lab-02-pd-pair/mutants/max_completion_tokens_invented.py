"""max_completion_tokens=1 added even when the client did not send it (an override of something absent)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_prefill_request = prefill_request


def prefill_request(body, request_id):
    new, headers = _solution_prefill_request(body, request_id)
    new["max_completion_tokens"] = 1
    return new, headers

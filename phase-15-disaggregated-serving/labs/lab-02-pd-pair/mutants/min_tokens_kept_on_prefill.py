"""min_tokens left on the prefill hop: with max_tokens=1 vLLM rejects the request (min_tokens > max_tokens)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_prefill_request = prefill_request


def prefill_request(body, request_id):
    new, headers = _solution_prefill_request(body, request_id)
    if "min_tokens" in body:
        new["min_tokens"] = body["min_tokens"]
    return new, headers

"""The client's body is mutated in place by the prefill transform: decode then gets max_tokens=1, stream=False."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_request(body, request_id):
    new = body
    new["max_tokens"] = 1
    if "max_completion_tokens" in new:
        new["max_completion_tokens"] = 1
    new["stream"] = False
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    new["kv_transfer_params"] = dict(PREFILL_KV_TRANSFER_PARAMS)
    return new, {"X-Request-Id": request_id}

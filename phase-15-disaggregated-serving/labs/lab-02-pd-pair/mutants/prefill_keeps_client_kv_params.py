"""The prefill transform only fills kv_transfer_params in when absent: a client's own params reach prefill."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_request(body, request_id):
    new = copy.deepcopy(body)
    new["max_tokens"] = 1
    if "max_completion_tokens" in new:
        new["max_completion_tokens"] = 1
    new["stream"] = False
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    new.setdefault("kv_transfer_params", dict(PREFILL_KV_TRANSFER_PARAMS))
    return new, {"X-Request-Id": request_id}

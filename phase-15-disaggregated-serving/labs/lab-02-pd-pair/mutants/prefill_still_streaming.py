"""Prefill request still streaming: stream is left as the client sent it, so no kv_transfer_params come back."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_request(body, request_id):
    new = copy.deepcopy(body)
    new["max_tokens"] = 1
    if "max_completion_tokens" in new:
        new["max_completion_tokens"] = 1
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    new["kv_transfer_params"] = dict(PREFILL_KV_TRANSFER_PARAMS)
    return new, {"X-Request-Id": request_id}

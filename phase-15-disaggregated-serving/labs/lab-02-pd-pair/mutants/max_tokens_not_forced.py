"""max_tokens not forced to 1 on the prefill hop: prefill generates the whole answer before decode starts."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_request(body, request_id):
    new = copy.deepcopy(body)
    new["stream"] = False
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    new["kv_transfer_params"] = dict(PREFILL_KV_TRANSFER_PARAMS)
    return new, {"X-Request-Id": request_id}

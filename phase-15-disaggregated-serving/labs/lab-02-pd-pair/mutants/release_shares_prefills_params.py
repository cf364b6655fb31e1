"""The release request shares prefill's params object (no deep copy): changing it changes the answer."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_request(body: dict[str, Any], prefill_response: dict[str, Any]) -> dict[str, Any]:
    new = decode_request(body, prefill_response)
    new["kv_transfer_params"] = prefill_response["kv_transfer_params"]
    new["max_tokens"] = 1
    if "max_completion_tokens" in new:
        new["max_completion_tokens"] = 1
    new["stream"] = False
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    return new

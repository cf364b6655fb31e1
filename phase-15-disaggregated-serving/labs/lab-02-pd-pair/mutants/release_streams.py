"""The release request keeps the client's stream: true: decode streams tokens nobody reads."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_request(body: dict[str, Any], prefill_response: dict[str, Any]) -> dict[str, Any]:
    new = decode_request(body, prefill_response)
    new["max_tokens"] = 1
    if "max_completion_tokens" in new:
        new["max_completion_tokens"] = 1
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    return new

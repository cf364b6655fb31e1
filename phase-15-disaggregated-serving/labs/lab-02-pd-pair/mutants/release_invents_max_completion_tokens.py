"""The release request always sets max_completion_tokens, a field the client never sent."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_request(body: dict[str, Any], prefill_response: dict[str, Any]) -> dict[str, Any]:
    new = decode_request(body, prefill_response)
    new["max_tokens"] = 1
    new["max_completion_tokens"] = 1
    new["stream"] = False
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    return new

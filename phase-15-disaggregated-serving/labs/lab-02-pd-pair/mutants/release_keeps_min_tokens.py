"""The release request keeps min_tokens: with max_tokens 1 and min_tokens 5 vLLM refuses the body (a 400)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def release_request(body: dict[str, Any], prefill_response: dict[str, Any]) -> dict[str, Any]:
    new = decode_request(body, prefill_response)
    new["max_tokens"] = 1
    if "max_completion_tokens" in new:
        new["max_completion_tokens"] = 1
    new["stream"] = False
    new.pop("stream_options", None)
    return new

"""The canary sends prefill the client body with prefill's kv_transfer_params added instead of prefill_request's: two tokens asked for, stream left to the server's default."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def canary(prefill_url: str, decode_url: str, model: str, prompt: list[int], request_id: str) -> str:
    body = {"model": model, "prompt": list(prompt), "max_tokens": 2, "temperature": 0.0}
    pbody, pheaders = prefill_request(body, request_id)
    try:
        status, answer, _ = post_json(
            prefill_url + "/v1/completions",
            dict(body, kv_transfer_params=dict(PREFILL_KV_TRANSFER_PARAMS)),
            pheaders,
        )
    except OSError:
        return "prefill_error"
    if status != 200:
        return "prefill_error"
    problem = prefill_answer_problem(answer)
    if problem is not None:
        return problem
    try:
        before = get_text(decode_url + "/metrics")
        dstatus, _, _ = post_json(decode_url + "/v1/completions", decode_request(body, answer),
                                  {"X-Request-Id": request_id})  # fmt: skip
        after = get_text(decode_url + "/metrics")
    except OSError:
        return "decode_error"
    try:
        verdict = kv_verdict(before, after, len(prompt))
    except ValueError:  # the counters went down or vanished: another decode process answered
        return "decode_error"
    if dstatus != 200 and verdict in ("kv_moved", "inconclusive"):
        return "decode_error"
    return verdict

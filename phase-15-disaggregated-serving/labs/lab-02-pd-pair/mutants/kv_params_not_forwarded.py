"""kv_transfer_params not forwarded to decode: decode silently prefills the prompt again."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def decode_request(body, prefill_response):
    problem = prefill_answer_problem(prefill_response)
    if problem is not None:
        raise ValueError(f"{problem}: prefill's answer cannot be handed off")
    return sanitize_request(body)

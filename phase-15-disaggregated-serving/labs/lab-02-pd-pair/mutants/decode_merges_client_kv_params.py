"""The decode transform merges prefill's params into the client's: keys only the client sent survive."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def decode_request(body, prefill_response):
    problem = prefill_answer_problem(prefill_response)
    if problem is not None:
        raise ValueError(problem)
    new = copy.deepcopy(body)
    params = dict(new.get("kv_transfer_params") or {})
    params.update(copy.deepcopy(prefill_response["kv_transfer_params"]))
    new["kv_transfer_params"] = params
    new.pop("ec_transfer_params", None)
    return new

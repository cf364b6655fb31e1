"""The prefill answer's remote_port is only checked for presence: "54349" and True pass as ports."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_problem = prefill_answer_problem


def prefill_answer_problem(prefill_response):
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if isinstance(params, dict) and params.get("remote_port") is not None:
        return _solution_problem({**prefill_response, "kv_transfer_params": {**params, "remote_port": 5600}})
    return _solution_problem(prefill_response)

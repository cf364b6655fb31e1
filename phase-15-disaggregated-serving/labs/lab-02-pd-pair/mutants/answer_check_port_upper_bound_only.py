"""remote_port only checked against 65535: port 0 (nothing listens there) is taken as a handoff."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_problem = prefill_answer_problem


def prefill_answer_problem(prefill_response):
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if (
        isinstance(params, dict)
        and params.get("remote_port") == 0
        and not isinstance(params["remote_port"], bool)
    ):
        return _solution_problem({**prefill_response, "kv_transfer_params": {**params, "remote_port": 5600}})
    return _solution_problem(prefill_response)

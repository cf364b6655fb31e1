"""do_remote_prefill checked for truthiness, not for True: the string "false" is taken as a handoff."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_problem = prefill_answer_problem


def prefill_answer_problem(prefill_response):
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if isinstance(params, dict) and params.get("do_remote_prefill"):
        return _solution_problem(
            {**prefill_response, "kv_transfer_params": {**params, "do_remote_prefill": True}}
        )
    return _solution_problem(prefill_response)

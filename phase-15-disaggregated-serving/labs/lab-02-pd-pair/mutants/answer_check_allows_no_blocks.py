"""remote_block_ids only checked to be a list: [] and [[]] (nothing to pull) are taken as handoffs."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_problem = prefill_answer_problem


def prefill_answer_problem(prefill_response):
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if isinstance(params, dict) and isinstance(params.get("remote_block_ids"), list):
        return _solution_problem(
            {**prefill_response, "kv_transfer_params": {**params, "remote_block_ids": [0]}}
        )
    return _solution_problem(prefill_response)

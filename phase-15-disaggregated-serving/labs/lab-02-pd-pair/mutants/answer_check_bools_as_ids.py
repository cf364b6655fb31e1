"""Block ids checked with isinstance(b, int) alone: [True, False] passes as two block ids."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_problem = prefill_answer_problem


def prefill_answer_problem(prefill_response):
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    blocks = params.get("remote_block_ids") if isinstance(params, dict) else None
    if isinstance(blocks, list) and blocks and all(isinstance(b, int) for b in blocks):
        fixed = [int(b) for b in blocks]
        return _solution_problem(
            {**prefill_response, "kv_transfer_params": {**params, "remote_block_ids": fixed}}
        )
    return _solution_problem(prefill_response)

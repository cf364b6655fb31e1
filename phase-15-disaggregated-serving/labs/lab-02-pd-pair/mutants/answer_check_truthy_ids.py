"""remote_engine_id / remote_request_id / remote_host only need to be truthy: an int engine id or a list request id passes as a handoff."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_problem = prefill_answer_problem


def prefill_answer_problem(prefill_response):
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if isinstance(params, dict) and all(
        params.get(k) for k in ("remote_engine_id", "remote_request_id", "remote_host")
    ):
        as_strings = params | {
            k: str(params[k]) for k in ("remote_engine_id", "remote_request_id", "remote_host")
        }
        return _solution_problem(prefill_response | {"kv_transfer_params": as_strings})
    return _solution_problem(prefill_response)

"""Any kv_transfer_params object counts as a handoff: {}, {"do_remote_prefill": false} or an echo pass."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_answer_problem(prefill_response):
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if not isinstance(params, dict):
        return NO_KV_PARAMS
    return None

"""Only kv_transfer_params is stripped: ec_transfer_params and the vllm_xargs copies reach the upstreams."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def sanitize_request(body):
    new = copy.deepcopy(body)
    new.pop("kv_transfer_params", None)
    return new

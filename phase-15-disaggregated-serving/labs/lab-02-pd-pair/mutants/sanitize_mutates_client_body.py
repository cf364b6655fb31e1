"""sanitize_request pops the internal fields from the caller's body itself (and returns it)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def sanitize_request(body):
    for key in INTERNAL_FIELDS:
        body.pop(key, None)
    xargs = body.get("vllm_xargs")
    if isinstance(xargs, dict):
        for key in INTERNAL_FIELDS:
            xargs.pop(key, None)
    return copy.deepcopy(body)

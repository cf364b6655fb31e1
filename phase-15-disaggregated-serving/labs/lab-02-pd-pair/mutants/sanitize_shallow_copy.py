"""sanitize_request copies one level only: nested lists and dicts are shared with the client's body."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def sanitize_request(body):
    new = dict(body)
    for key in INTERNAL_FIELDS:
        new.pop(key, None)
    xargs = new.get("vllm_xargs")
    if isinstance(xargs, dict):
        new["vllm_xargs"] = {k: v for k, v in xargs.items() if k not in INTERNAL_FIELDS}
    return new

"""Internal fields dropped only when truthy: a falsy kv_transfer_params in vllm_xargs reaches decode and kills its engine core."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def sanitize_request(body: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(body)
    for key in INTERNAL_FIELDS:
        if new.get(key):
            new.pop(key)
    xargs = new.get("vllm_xargs")
    if isinstance(xargs, dict):
        for key in INTERNAL_FIELDS:
            if xargs.get(key):
                xargs.pop(key)
    return new

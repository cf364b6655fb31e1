"""vllm_xargs assumed to be an object: a list crashes sanitize (AttributeError) instead of reaching vLLM's 400."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def sanitize_request(body: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(body)
    for key in INTERNAL_FIELDS:
        new.pop(key, None)
    xargs = new.get("vllm_xargs")
    if xargs is not None:
        for key in INTERNAL_FIELDS:
            xargs.pop(key, None)
    return new

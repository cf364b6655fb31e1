"""Only the NIXL-steering keys are stripped from the client's kv_transfer_params: chat's prompt_token_ids (decode's prompt) still get through."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def sanitize_request(body: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(body)
    for key in INTERNAL_FIELDS:
        kv = new.get(key)
        if isinstance(kv, dict) and key == "kv_transfer_params":
            for k in [k for k in kv if k.startswith(("do_remote", "remote_"))]:
                kv.pop(k)
            if not kv:
                new.pop(key)
        else:
            new.pop(key, None)
    xargs = new.get("vllm_xargs")
    if isinstance(xargs, dict):
        for key in INTERNAL_FIELDS:
            xargs.pop(key, None)
    return new

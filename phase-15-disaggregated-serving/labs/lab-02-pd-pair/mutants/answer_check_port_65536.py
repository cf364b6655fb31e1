"""Port bound off by one: remote_port 65536 (no such TCP port) is accepted as a handoff."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def prefill_answer_problem(prefill_response: Any) -> str | None:
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if params is None or params == {}:
        return NO_KV_PARAMS
    if not isinstance(params, dict):
        return BAD_KV_PARAMS

    def is_id(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    blocks = params.get("remote_block_ids")
    flat = isinstance(blocks, list) and bool(blocks) and all(is_id(b) for b in blocks)
    grouped = (
        isinstance(blocks, list)
        and bool(blocks)
        and all(isinstance(g, list) and all(is_id(b) for b in g) for g in blocks)
        and any(blocks)
    )
    port = params.get("remote_port")
    usable = (
        params.get("do_remote_prefill") is True
        and (flat or grouped)
        and all(
            isinstance(params.get(k), str) and params[k]
            for k in ("remote_engine_id", "remote_request_id", "remote_host")
        )
        and isinstance(port, int)
        and not isinstance(port, bool)
        and 0 < port <= 65536
    )
    return None if usable else BAD_KV_PARAMS

"""kv_transfer_params not forwarded to decode: decode silently prefills the prompt again."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def decode_request(body, prefill_response):
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f"prefill answer carries no kv_transfer_params object: {params!r}")
    return copy.deepcopy(body)

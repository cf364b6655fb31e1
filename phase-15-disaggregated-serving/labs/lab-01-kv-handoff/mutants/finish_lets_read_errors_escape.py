"""finish_pull lets a failed read raise out of it: the request stays waiting for K/V that never comes, its blocks held."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    if policy not in ("fail", "recompute"):
        raise ValueError(policy)
    if dst.clock() + clock_offset + margin_s < params.expires_at:
        src.kv_cache.read_raw(list(params.remote_block_ids))  # BUG: a transport error propagates from here
    return _finish(dst, src, params, clock_offset, margin_s, policy)

"""the pull copies position by position through the logical views: any block size and layout "works", so nothing is refused."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_start_pull = start_pull


def start_pull(engine, params):
    # BUG: the ratio rule and the layout check skipped (a positional copy does not need them)
    fake = dataclasses.replace(
        params,
        kv_layout=engine.kv_layout,
        remote_block_size=1,
        remote_block_ids=tuple(range(params.snapshot.num_computed_tokens)),
    )
    return _correct_start_pull(engine, fake)


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    if policy not in ("fail", "recompute"):
        raise ValueError(policy)
    rid, sid = params.snapshot.request_id, params.snapshot.snapshot_id
    request = dst.requests.get(rid)
    if request is None or request.status != RequestStatus.WAITING_FOR_REMOTE_KVS:
        raise ValueError(rid)
    read = False
    if dst.clock() + clock_offset + margin_s < params.expires_at:
        try:
            rbs = params.remote_block_size
            for p in range(params.snapshot.num_computed_tokens):
                kv = src.kv_cache.kv[params.remote_block_ids[p // rbs], p % rbs]
                dst.kv_cache.kv[request.block_table[p // dst.block_size], p % dst.block_size] = kv
            read = True
        except Exception:
            pass
    verdict = notify_read_done(src, sid)
    dst.detach_request(rid)
    if verdict == ReadVerdict.IN_TIME and read:
        request.num_computed_tokens = params.snapshot.num_computed_tokens
        dst.admit_running(request)
        return "imported"
    dst.block_pool.free(request.block_table)
    request.block_table, request.num_computed_tokens = [], 0
    if verdict != ReadVerdict.NOT_YOURS and policy == "recompute":
        dst.enqueue_waiting(request)
        return "recomputed"
    dst.failed[rid] = "load failure"
    return "failed"

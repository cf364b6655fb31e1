"""finish_pull judges the margin against the source's lease table (its deadline after heartbeats the reader never heard of) instead of params.expires_at, the deadline the reader was handed."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def finish_pull(
    dst: Engine,
    src: Engine,
    params: PullParams,
    clock_offset: float = 0.0,
    margin_s: float = 5.0,
    policy: str = "fail",
) -> str:
    if policy not in ("fail", "recompute"):
        raise ValueError(f"policy must be 'fail' or 'recompute', got {policy!r}")
    rid, snapshot_id = params.snapshot.request_id, params.snapshot.snapshot_id
    request = dst.requests.get(rid)
    if request is None or request.status != RequestStatus.WAITING_FOR_REMOTE_KVS:
        raise ValueError(f"{rid!r} is not waiting for remote K/V on this engine (start_pull it first)")
    read, why = False, "declined: too close to the lease's deadline"
    deadline = src.leases.get(snapshot_id).deadline if snapshot_id in src.leases else params.expires_at
    if dst.clock() + clock_offset + margin_s < deadline:  # BUG: peeks at the source's lease table
        try:
            ratio, remote = dst.block_size // params.remote_block_size, params.remote_block_size
            raw = src.kv_cache.read_raw(list(params.remote_block_ids))  # one-sided: nobody on src is asked
            for j, block in enumerate(raw):
                dst.kv_cache.write_raw(request.block_table[j // ratio], block, (j % ratio) * remote)
            read = True
        except Exception as exc:  # noqa: BLE001 - a transport or write error is a load failure
            why = f"read failed: {exc!r}"
    verdict = notify_read_done(src, snapshot_id)  # rides on the read: sent when it is over
    dst.detach_request(rid)
    if verdict == ReadVerdict.IN_TIME and read:
        request.num_computed_tokens = params.snapshot.num_computed_tokens
        try:
            dst.admit_running(request)
            return "imported"
        except Exception as exc:  # noqa: BLE001 - admission failing is a load failure too
            why = f"admission failed: {exc!r}"
    elif verdict == ReadVerdict.EXPIRED:
        why = "the lease expired before the read was acknowledged: its blocks may have been reused"
    dst.block_pool.free(request.block_table)
    request.block_table, request.num_computed_tokens = [], 0
    if verdict == ReadVerdict.NOT_YOURS:
        dst.failed[rid] = "not ours: another reader owns this handoff (or the source never leased it)"
        return "failed"
    if policy == "recompute":
        dst.enqueue_waiting(request)  # holds nothing: the engine recomputes its K/V from its tokens
        return "recomputed"
    dst.failed[rid] = why
    return "failed"

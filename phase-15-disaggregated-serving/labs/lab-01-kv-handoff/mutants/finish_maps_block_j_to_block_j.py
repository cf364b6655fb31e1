"""finish_pull writes source block j into local block j: with bigger local blocks the positions land in the wrong slots."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_finish = finish_pull


def finish_pull(dst, src, params, clock_offset=0.0, margin_s=5.0, policy="fail"):
    write = dst.kv_cache.write_raw

    def one_to_one(block_id, data, slot_offset=0):
        request = dst.requests[params.snapshot.request_id]
        j = (
            request.block_table.index(block_id) * (dst.block_size // params.remote_block_size)
            + slot_offset // params.remote_block_size
        )
        return write(
            request.block_table[j] if j < len(request.block_table) else block_id, data, 0
        )  # BUG: no ratio

    dst.kv_cache.write_raw = one_to_one
    try:
        return _finish(dst, src, params, clock_offset, margin_s, policy)
    finally:
        dst.kv_cache.write_raw = write

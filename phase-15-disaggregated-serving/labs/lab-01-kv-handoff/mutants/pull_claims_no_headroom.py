"""start_pull claims only the K/V's blocks, not room for the next token (unlike import_request)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_start_pull = start_pull


def start_pull(engine, params):
    _correct_start_pull(engine, params)
    request = engine.requests[params.snapshot.request_id]
    need = -(-params.snapshot.num_computed_tokens // engine.block_size)
    if len(request.block_table) > need:  # BUG: ceil(n / block_size), no headroom
        engine.block_pool.free(request.block_table[need:])
        del request.block_table[need:]

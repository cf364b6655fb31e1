"""import_prefix_aware counts the headroom block as shipped: when the K/V fills its last block exactly,
shipped_blocks is one too many (nothing crossed the wire into that block)."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_import_prefix_aware = import_prefix_aware  # noqa: F821 - the solution's, from inherit_solution


def import_prefix_aware(engine, snapshot):
    got = _solution_import_prefix_aware(engine, snapshot)
    table = engine.requests[snapshot.request_id].block_table
    return dataclasses.replace(got, shipped_blocks=len(table) - got.reused_blocks)  # BUG: the headroom too

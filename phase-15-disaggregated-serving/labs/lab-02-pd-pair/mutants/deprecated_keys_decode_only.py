"""0.10-era kv-transfer keys looked for on decode only: prefill with kv_ip refuses to start, unannounced."""

import dataclasses

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    clean = dataclasses.replace(prefill, kv_transfer_extra={})
    return _solution_find_hazards(clean, decode)

"""Import queues the request as waiting: right output, but the shipped K/V is thrown away and the prefill redone."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def import_request(engine, snapshot):
    validate_snapshot(engine, snapshot)
    readmit_by_recompute(engine, snapshot)  # BUG: recompute instead of admitting the shipped K/V

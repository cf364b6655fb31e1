"""start_pull never compares KV layouts: raw NHD bytes land in an HND cache, scrambled."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_correct_start_pull = start_pull


def start_pull(engine, params):
    _correct_start_pull(
        engine, dataclasses.replace(params, kv_layout=engine.kv_layout)
    )  # BUG: no layout check

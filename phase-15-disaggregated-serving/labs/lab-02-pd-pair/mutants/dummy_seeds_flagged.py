"""Dummy weights with different --seed flagged as different weights, but vLLM seeds every dummy tensor with 1234."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_find_hazards = find_hazards


def find_hazards(prefill, decode):
    found = _solution_find_hazards(prefill, decode)
    if prefill.load_format == decode.load_format == "dummy" and prefill.seed != decode.seed:
        found.append(Hazard("dummy_weights_differ", "dummy weights from different seeds"))
    return found

"""The accelerator is named 'h100' (not on the menu's 'h100-sxm')."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def design_fleet(scenario):
    return Plan("h100", 3, budget=512)

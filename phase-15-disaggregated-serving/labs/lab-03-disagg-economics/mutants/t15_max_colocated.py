"""Every GPU allowed, colocated on the first accelerator of the menu: it meets the SLOs and overpays."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def design_fleet(scenario):
    return Plan(scenario.menu[0], scenario.max_instances, budget=512)

"""The plan's url is built from the side-channel host: a side whose NIXL traffic uses another address than its API is unreachable."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_launch_plan = launch_plan


def launch_plan(side, python=sys.executable):
    plan = _solution_launch_plan(side, python)
    plan.url = f"http://{side.side_channel_host}:{side.port}"
    return plan

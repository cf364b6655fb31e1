"""The plan's url assumes the server is local: http://127.0.0.1:<port> even for a side on another host."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_launch_plan = launch_plan


def launch_plan(side, python=sys.executable):
    plan = _solution_launch_plan(side, python)
    plan.url = f"http://127.0.0.1:{side.port}"
    return plan

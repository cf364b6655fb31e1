"""side.env copied as is: an int from the YAML (OMP_NUM_THREADS: 2) reaches os.environ and subprocess fails."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_launch_plan = launch_plan


def launch_plan(side, python=sys.executable):
    plan = _solution_launch_plan(side, python)
    plan.env.update(side.env)
    return plan

"""CUDA_VISIBLE_DEVICES written even when cuda_devices is unset: the server sees the string 'None' (no GPU)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_launch_plan = launch_plan


def launch_plan(side, python=sys.executable):
    plan = _solution_launch_plan(side, python)
    if side.device == "cuda" and "CUDA_VISIBLE_DEVICES" not in side.env:
        plan.env["CUDA_VISIBLE_DEVICES"] = str(side.cuda_devices)
    return plan

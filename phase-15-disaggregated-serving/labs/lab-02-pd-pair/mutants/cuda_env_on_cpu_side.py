"""CUDA_VISIBLE_DEVICES set on any side with cuda_devices, CPU sides included (the device is not checked)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_launch_plan = launch_plan


def launch_plan(side, python=sys.executable):
    plan = _solution_launch_plan(side, python)
    if side.cuda_devices is not None and "CUDA_VISIBLE_DEVICES" not in side.env:
        plan.env["CUDA_VISIBLE_DEVICES"] = str(side.cuda_devices)
    return plan

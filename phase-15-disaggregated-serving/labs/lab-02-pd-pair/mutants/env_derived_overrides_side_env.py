"""The derived variables are written after side.env: a side's own VLLM_NIXL_SIDE_CHANNEL_PORT is overridden."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_launch_plan = launch_plan


def launch_plan(side, python=sys.executable):
    plan = _solution_launch_plan(side, python)
    plan.env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = side.side_channel_host
    plan.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(side.side_channel_port)
    if side.cpu_cores is not None:
        plan.env["VLLM_CPU_OMP_THREADS_BIND"] = str(side.cpu_cores)
    return plan

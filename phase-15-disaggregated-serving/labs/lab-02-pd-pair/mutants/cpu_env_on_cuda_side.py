"""CPU variables set whatever the device: a CUDA side with cpu_cores set gets VLLM_CPU_OMP_THREADS_BIND."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_launch_plan = launch_plan


def launch_plan(side, python=sys.executable):
    plan = _solution_launch_plan(side, python)
    if side.cpu_kvcache_space_gib is not None:
        plan.env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(side.cpu_kvcache_space_gib))
    if side.cpu_cores is not None:
        plan.env.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(side.cpu_cores))
    return plan

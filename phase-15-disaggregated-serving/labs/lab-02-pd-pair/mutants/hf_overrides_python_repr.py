"""--hf-overrides written with str() instead of JSON: vLLM cannot parse {'num_hidden_layers': 6}."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

_solution_launch_plan = launch_plan


def launch_plan(side, python=sys.executable):
    plan = _solution_launch_plan(side, python)
    if side.hf_overrides:
        i = plan.argv.index("--hf-overrides")
        plan.argv[i + 1] = str(side.hf_overrides)
    return plan

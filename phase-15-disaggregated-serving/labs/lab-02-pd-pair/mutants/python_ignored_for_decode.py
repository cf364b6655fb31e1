"""launch_plans passes the python on to prefill only: decode starts with sys.executable."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def launch_plans(spec, python=sys.executable):
    return {"prefill": launch_plan(spec.prefill, python), "decode": launch_plan(spec.decode)}

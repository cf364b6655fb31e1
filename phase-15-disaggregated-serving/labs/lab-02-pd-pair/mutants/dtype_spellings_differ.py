"""Model dtypes compared as written: half on one side and float16 on the other is flagged, yet vLLM hashes one dtype."""

from labkit.mutants import inherit_solution

inherit_solution(globals())

DTYPE_ALIASES = {}

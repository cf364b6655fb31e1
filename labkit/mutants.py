"""Instructor mutants: the solution with exactly one realistic bug.

A mutant file lives in ``<lab>/mutants/`` and starts with::

    from labkit.mutants import inherit_solution
    inherit_solution(globals())

then redefines the one function it breaks. The solution's source runs in the mutant's own namespace,
so every other solution function calls the broken one: the bug propagates as it would in real code.
"""

from __future__ import annotations

from pathlib import Path


def inherit_solution(namespace: dict) -> None:
    solution = Path(namespace["__file__"]).resolve().parent.parent / "solution.py"
    code = compile(solution.read_text(), str(solution), "exec")
    exec(code, namespace)  # noqa: S102 - trusted repository file, by design

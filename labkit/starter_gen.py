"""Build each lab's ``starter.py`` from its ``solution.py``, so the two cannot drift.

In a solution, every piece of student work sits between fences::

    def transfer_ms(nbytes, link_gbps, efficiency=1.0):
        \"\"\"Contract and invariants (kept in the starter).\"\"\"
        # BEGIN SOLUTION lab-03 task 2: convert bytes to bits and divide by the link rate
        ...reference code...
        # END SOLUTION

The starter keeps everything outside the fences and replaces each fenced region with
``raise NotImplementedError("lab-03 task 2: convert bytes to bits and divide by the link rate")``.

    python -m labkit.starter_gen            # rewrite every starter.py
    python -m labkit.starter_gen --check    # exit 1 if any starter.py is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from labkit import lab_dirs

BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION (?P<msg>lab-\d\d task \d+: .+?)\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
TASK = re.compile(r"^lab-\d\d task (?P<task>\d+): ")
HEADER = (
    "# STARTER FILE - your work goes here. Replace each `raise NotImplementedError(...)` with code that\n"
    "# meets the docstring above it, then grade yourself: see this lab's README ('How to grade').\n"
    "# (Instructors: generated from solution.py by `make starters`; edit solution.py, not this file.)\n"
)


class FenceError(ValueError):
    pass


def starter_source(
    solution_source: str, origin: str = "solution.py", only_tasks: set[int] | None = None
) -> str:
    """The starter for ``solution_source``: every fenced body replaced by its NotImplementedError.

    ``only_tasks`` (for the integrity check): stub only the fences of those task numbers and keep the
    solution's code in the others, e.g. ``only_tasks={3}`` gives a file where task 3 alone is missing.
    """
    out: list[str] = [HEADER]
    inside = keep = False
    for lineno, line in enumerate(solution_source.splitlines(keepends=True), start=1):
        begin = BEGIN.match(line)
        if begin:
            if inside:
                raise FenceError(f"{origin}:{lineno}: BEGIN SOLUTION inside another fence")
            inside = True
            keep = only_tasks is not None and int(TASK.match(begin["msg"])["task"]) not in only_tasks
            msg = begin["msg"].replace("\\", "\\\\").replace('"', '\\"')
            if not keep:
                out.append(f'{begin["indent"]}raise NotImplementedError("{msg}")\n')
        elif END.match(line):
            if not inside:
                raise FenceError(f"{origin}:{lineno}: END SOLUTION without BEGIN")
            inside = False
        elif "# BEGIN SOLUTION" in line:
            raise FenceError(f"{origin}:{lineno}: fence must read '# BEGIN SOLUTION lab-0X task N: <what>'")
        elif not inside or keep:
            out.append(line)
    if inside:
        raise FenceError(f"{origin}: a BEGIN SOLUTION fence is never closed")
    return "".join(out)


def fenced_tasks(solution_source: str) -> list[int]:
    """The task numbers that have at least one fence in a solution, ascending."""
    return sorted(
        {int(TASK.match(m["msg"])["task"]) for m in map(BEGIN.match, solution_source.splitlines()) if m}
    )


def expected_starter(lab_dir: Path) -> str:
    solution = lab_dir / "solution.py"
    return starter_source(solution.read_text(), str(solution))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only check that every starter.py is fresh")
    args = parser.parse_args(argv)
    stale = []
    for lab in lab_dirs():
        if not (lab / "solution.py").exists():
            continue
        want = expected_starter(lab)
        have = (lab / "starter.py").read_text() if (lab / "starter.py").exists() else None
        if have != want:
            stale.append(lab.name)
            if not args.check:
                (lab / "starter.py").write_text(want)
                print(f"wrote {lab.name}/starter.py")
    if args.check and stale:
        print(f"stale starter.py (run `make starters`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

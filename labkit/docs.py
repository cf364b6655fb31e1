"""Numbers the READMEs quote, computed from the data: ``make docs`` writes them, ``make docs-check`` checks.

A generated number sits between two HTML comments (GitHub and other renderers show only the number)::

    The suite collects <!-- gen:tests.collected -->867<!-- /gen --> tests.

The name is one of the values below (``python -m labkit.docs --list`` prints each with its value now);
the text between the comments is what the data says, and ``make docs-check`` (CI runs it) fails on any
difference, so a count or time typed by hand, or left behind by a change to the tests or a capture,
cannot stay. Both comments on one line; a name is lower case, digits, ``.``, ``_`` and ``-`` (so a
document can show the syntax as ``<!-- gen:NAME -->`` without making a marker).

Values:
  tests.collected / .cpu / .vllm / .dynamo / .gpu / .graded / .ungraded
      tests `make test` collects: all, those with no tier marker (what a CPU-only machine runs),
      per tier marker, graded (a task marker) and ungraded
  lab01.tests / .graded / .graded_cpu / .ungraded / .vllm / .tasks / .mutants
      the same for one lab's folder (lab01, lab02, lab03); graded_cpu = graded with no tier marker
      (what check-starter proves per task and check-mutants runs); tasks = fenced tasks in
      solution.py; mutants = files in mutants/
  lab03.task2 / lab03.task2.cpu
      graded tests marked lab03_task2 (all tiers / no tier marker)
  mutants.all
      mutant files in every lab
  lab02.captures.cpu-2core.recorder_s / .recorder_min / .setups / .runs / .duration_s
      from every manifest.json under a lab's captures/ or profiles/ (the folder path with / as .):
      the recorder's wall time in seconds and rounded minutes, its number of setups, runs per
      setup, and seconds per run, where the manifest has them
  lab02.captures.compat-matrix.wall_s / .wall_min / .rows
      from a matrix.json: the recording's wall time and its number of rows
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from labkit import REPO_ROOT, lab_dirs, lab_short_name

MARKER = re.compile(r"<!-- gen:(?P<name>[a-z0-9_.-]+) -->(?P<value>.*?)<!-- /gen -->")
OPENING = re.compile(r"<!-- gen:[a-z0-9_.-]+ -->")  # an example written gen:NAME is not a marker
TIERS = ("vllm", "dynamo", "gpu")
TASK = re.compile(r"^lab(?P<lab>\d\d)_task(?P<task>\d+)$")
SKIP_DIRS = {".venv", ".git", "out", "node_modules", "__pycache__", ".pytest_cache", ".hypothesis"}
COLLECT_ENV = "LABKIT_DOCS_COLLECT"  # set for the collecting pytest: where it writes what it found


class DocsError(RuntimeError):
    """The data could not be read (a collection error, a broken manifest)."""


# --- the pytest plugin half: `pytest --collect-only -p labkit.docs` writes each test's lab and markers


def pytest_collection_finish(session) -> None:  # a pytest hook, active only under -p labkit.docs
    out = os.environ.get(COLLECT_ENV)
    if not out:
        return
    from labkit import impl as labimpl

    tests = []
    for item in session.items:
        lab = labimpl.owning_lab(Path(str(item.path)))
        tests.append(
            {
                "nodeid": item.nodeid,
                "lab": lab_short_name(lab) if lab else None,
                "markers": sorted({m.name for m in item.iter_markers()}),
            }
        )
    Path(out).write_text(json.dumps(tests))


def collect_tests() -> list[dict]:
    """Every test `make test` collects: {'nodeid', 'lab' ('lab-03' or None), 'markers'}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_REQUIRE_", "PYTEST_ADDOPTS"))}
    env["LAB_IMPL"] = "solution"
    with tempfile.TemporaryDirectory() as tmp:
        env[COLLECT_ENV] = str(Path(tmp) / "tests.json")
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "labkit.docs",
        ]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        path = Path(env[COLLECT_ENV])
        if proc.returncode != 0 or not path.exists():
            raise DocsError(f"collecting the tests failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        return json.loads(path.read_text())


# --- the values


def _test_values(tests: list[dict]) -> dict[str, int]:
    def tier_free(t: dict) -> bool:
        return not set(t["markers"]) & set(TIERS)

    def graded(t: dict) -> bool:
        return "ungraded" not in t["markers"]

    values: dict[str, int] = {
        "tests.collected": len(tests),
        "tests.cpu": sum(map(tier_free, tests)),
        "tests.graded": sum(map(graded, tests)),
        "tests.ungraded": sum(not graded(t) for t in tests),
    }
    for tier in TIERS:
        values[f"tests.{tier}"] = sum(tier in t["markers"] for t in tests)
    for lab in lab_dirs():
        key = lab_short_name(lab).replace("-", "")
        mine = [t for t in tests if t["lab"] == lab_short_name(lab)]
        values[f"{key}.tests"] = len(mine)
        values[f"{key}.graded"] = sum(map(graded, mine))
        values[f"{key}.graded_cpu"] = sum(graded(t) and tier_free(t) for t in mine)
        values[f"{key}.ungraded"] = sum(not graded(t) for t in mine)
        values[f"{key}.vllm"] = sum("vllm" in t["markers"] for t in mine)
        per_task, per_task_cpu = Counter(), Counter()
        for t in mine:
            for m in t["markers"]:
                if found := TASK.match(m):
                    per_task[found["task"]] += 1
                    per_task_cpu[found["task"]] += tier_free(t)
        for task, n in per_task.items():
            values[f"{key}.task{task}"] = n
            values[f"{key}.task{task}.cpu"] = per_task_cpu[task]
    return values


def _lab_values() -> dict[str, int]:
    from labkit.starter_gen import fenced_tasks

    values = {}
    total = 0
    for lab in lab_dirs():
        key = lab_short_name(lab).replace("-", "")
        if (lab / "solution.py").exists():
            values[f"{key}.tasks"] = len(fenced_tasks((lab / "solution.py").read_text()))
        mutants = [m for m in (lab / "mutants").glob("*.py") if m.name != "__init__.py"]
        values[f"{key}.mutants"] = len(mutants)
        total += len(mutants)
    values["mutants.all"] = total
    return values


def _data_name(lab: Path, folder: Path) -> str:
    rel = folder.relative_to(lab).as_posix().replace("/", ".")
    return f"{lab_short_name(lab).replace('-', '')}.{rel}"


def _capture_values() -> dict[str, int]:
    values = {}
    for lab in lab_dirs():
        for top in ("captures", "profiles"):
            for path in sorted((lab / top).glob("**/manifest.json")):
                try:
                    m = json.loads(path.read_text())
                except ValueError as exc:
                    raise DocsError(f"{path}: not JSON ({exc})") from None
                name = _data_name(lab, path.parent)
                if isinstance(m.get("recorder_wall_s"), int | float):
                    values[f"{name}.recorder_s"] = round(m["recorder_wall_s"])
                    values[f"{name}.recorder_min"] = round(m["recorder_wall_s"] / 60)
                if isinstance(m.get("setups"), dict | list):
                    values[f"{name}.setups"] = len(m["setups"])
                if isinstance(m.get("runs"), list):
                    values[f"{name}.runs"] = len(m["runs"])
                duration = (m.get("workload") or {}).get("duration_s")
                if isinstance(duration, int | float):
                    values[f"{name}.duration_s"] = round(duration)
            for path in sorted((lab / top).glob("**/matrix.json")):
                m = json.loads(path.read_text())
                name = _data_name(lab, path.parent)
                if isinstance(m.get("wall_s"), int | float):
                    values[f"{name}.wall_s"] = round(m["wall_s"])
                    values[f"{name}.wall_min"] = round(m["wall_s"] / 60)
                values[f"{name}.rows"] = len(m.get("rows", []))
    return values


def compute_values(tests: list[dict] | None = None) -> dict[str, str]:
    """Every generated value by name, as the text a README shows."""
    values = {
        **_test_values(collect_tests() if tests is None else tests),
        **_lab_values(),
        **_capture_values(),
    }
    return {k: str(v) for k, v in sorted(values.items())}


# --- the markdown half


def markdown_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every .md file of the project (not in .venv, out/ or caches)."""
    found = []
    for path in sorted(root.rglob("*.md")):
        rel = path.relative_to(root).parts
        if not any(part in SKIP_DIRS or part.startswith(".integrity-") for part in rel[:-1]):
            found.append(path)
    return found


def markers_in(text: str) -> list[tuple[int, str, str]]:
    """(line number, name, value) of each marker in ``text``."""
    return [(text.count("\n", 0, m.start()) + 1, m["name"], m["value"]) for m in MARKER.finditer(text)]


def malformed(text: str) -> list[int]:
    """Line numbers of a '<!-- gen:' that does not open a well-formed marker (closed on its line)."""
    good = {m.start() for m in MARKER.finditer(text)}
    return [text.count("\n", 0, m.start()) + 1 for m in OPENING.finditer(text) if m.start() not in good]


def check(files: list[Path], values: dict[str, str]) -> list[str]:
    """One problem per line: a marker whose text differs from the data, an unknown name, a broken marker."""
    problems = []
    for path in files:
        text = path.read_text()
        rel = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        for line in malformed(text):
            problems.append(
                f"{rel}:{line}: a '<!-- gen:NAME -->' marker needs '<!-- /gen -->' on the same line"
            )
        for line, name, value in markers_in(text):
            if name not in values:
                problems.append(f"{rel}:{line}: unknown name gen:{name} (python -m labkit.docs --list)")
            elif value != values[name]:
                problems.append(f"{rel}:{line}: gen:{name} says {value!r}, the data says {values[name]!r}")
    return problems


def rewrite(text: str, values: dict[str, str]) -> str:
    """``text`` with every known marker's value replaced by the data's (unknown names left as they are)."""

    def sub(m: re.Match) -> str:
        value = values.get(m["name"], m["value"])
        return f"<!-- gen:{m['name']} -->{value}<!-- /gen -->"

    return MARKER.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--check", action="store_true", help="exit 1 when a marker disagrees with the data")
    what.add_argument("--write", action="store_true", help="rewrite every marker's value from the data")
    what.add_argument("--list", action="store_true", help="print every name and its value now")
    ap.add_argument("files", nargs="*", type=Path, help="markdown files (default: every .md of the project)")
    args = ap.parse_args(argv)
    try:
        values = compute_values()
    except DocsError as exc:
        print(f"docs: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for name, value in values.items():
            print(f"{name} = {value}")
        return 0
    files = [f.resolve() for f in args.files] or markdown_files()
    if args.write:
        changed = []
        for path in files:
            text = path.read_text()
            new = rewrite(text, values)
            if new != text:
                path.write_text(new)
                changed.append(str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path))
        print(
            f"docs: rewrote {', '.join(changed)}" if changed else "docs: every generated number was current"
        )
    problems = check(files, values)
    for p in problems:
        print(p)
    n = sum(len(markers_in(p.read_text())) for p in files)
    if problems:
        print(
            f"docs-check: {len(problems)} problem(s) in {n} generated numbers; `make docs` rewrites the values"
        )
        return 1
    print(f"docs-check: {n} generated numbers in {len(files)} markdown files agree with the data")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Starter/solution parity (ungraded): the file you grade exposes the solution's public API.

Compared through the AST, so nothing is imported: the same public names, the same function and method
signatures, the same dataclass fields. Extra public names are yours to add (helper classes, functions,
constants): parity only fails when something the solution exposes is missing or re-shaped. If it fails
on your starter, you renamed or re-shaped something the tests call.

The shipped starter is checked as ``labkit.starter_gen`` generates it from solution.py, never your
working copy: your edits to starter.py cannot fail `make test`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from labkit import impl as labimpl
from labkit import lab_dirs
from labkit.starter_gen import expected_starter

LABS = [lab for lab in lab_dirs() if (lab / "solution.py").exists()]


def public_api(source: str) -> dict[str, str]:
    """Public name -> shape ('def(args) -> ret', 'class(bases)', 'field: type', 'name') of a module."""
    tree = ast.parse(source)
    api: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            api[node.name] = f"def({ast.unparse(node.args)})" + (
                f" -> {ast.unparse(node.returns)}" if node.returns else ""
            )
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            api[node.name] = f"class({', '.join(ast.unparse(b) for b in node.bases)})"
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef) and not (
                    sub.name.startswith("_") and sub.name != "__init__"
                ):
                    api[f"{node.name}.{sub.name}"] = f"def({ast.unparse(sub.args)})"
                elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                    api[f"{node.name}.{sub.target.id}"] = f"field: {ast.unparse(sub.annotation)}"
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and not t.id.startswith("_"):
                    api[t.id] = "name"
    return api


def parity_problem(solution_source: str, graded_source: str, graded_name: str) -> str | None:
    """None when ``graded_source`` exposes every public name of the solution with the same shape.

    Names only the graded file has (a student's helpers) are allowed. Otherwise a message listing what
    is missing and what changed, e.g. ``starter.py must expose ...; missing: {'migrate': 'def(...)'}``.
    """
    want, have = public_api(solution_source), public_api(graded_source)
    missing = {k: v for k, v in want.items() if k not in have}
    changed = {k: (want[k], have[k]) for k in want if k in have and want[k] != have[k]}
    if not missing and not changed:
        return None
    return (
        f"{graded_name} must expose the same public API as the solution (extra names are fine); "
        f"missing: {missing}; changed (solution, yours): {changed}"
    )


@pytest.mark.ungraded
@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_graded_file_has_the_solution_public_api(lab: Path) -> None:
    graded = labimpl.impl_path_for(lab)
    if labimpl.owning_lab(graded) not in (None, lab.resolve()):
        pytest.skip(f"LAB_IMPL names a file of another lab ({graded})")
    problem = parity_problem((lab / "solution.py").read_text(), graded.read_text(), graded.name)
    assert problem is None, problem


@pytest.mark.ungraded
@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_shipped_starter_has_exactly_the_solution_public_api(lab: Path) -> None:
    """The starter as generated from solution.py (what students receive): fences may only hide bodies."""
    want, have = public_api((lab / "solution.py").read_text()), public_api(expected_starter(lab))
    assert want == have, (
        "the generated starter must expose exactly the solution's public API (a fence around more than a "
        f"function body?); only in solution: {sorted(set(want) - set(have))}; only in starter: "
        f"{sorted(set(have) - set(want))}; changed: {sorted(k for k in want.keys() & have.keys() if want[k] != have[k])}"
    )


STUDENT_HELPERS = '''

HELPER_LIMIT = 3


class MyScratchpad:
    """A student's own helper class."""

    def note(self, text: str) -> None:
        self.last = text


def my_helper(x: int) -> int:
    return x + 1
'''


@pytest.mark.ungraded
@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_student_helpers_do_not_break_parity(lab: Path, tmp_path: Path) -> None:
    """A temp copy of the shipped starter plus public helpers still passes; a renamed function does not."""
    solution = (lab / "solution.py").read_text()
    copy = tmp_path / "starter.py"
    copy.write_text(expected_starter(lab) + STUDENT_HELPERS)
    assert "MyScratchpad" in public_api(copy.read_text())
    assert parity_problem(solution, copy.read_text(), copy.name) is None

    victim = next(k for k, v in public_api(solution).items() if v.startswith("def(") and "." not in k)
    broken = ast.parse(copy.read_text())
    for node in broken.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == victim:
            node.name = f"{victim}_renamed"
    problem = parity_problem(solution, ast.unparse(broken), copy.name)
    assert problem is not None and victim in problem


@pytest.mark.ungraded
def test_every_lab_is_present() -> None:
    names = [lab.name for lab in lab_dirs()]
    assert names == ["lab-01-kv-handoff", "lab-02-pd-pair", "lab-03-disagg-economics"], names

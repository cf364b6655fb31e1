"""Starter/solution parity (ungraded): the file you grade exposes the solution's public API.

Compared through the AST, so nothing is imported: the same public names, the same function and method
signatures, the same dataclass fields. If this fails on your starter, you renamed or re-shaped something
the tests call.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from labkit import impl as labimpl
from labkit import lab_dirs

LABS = [lab for lab in lab_dirs() if (lab / "solution.py").exists()]


def public_api(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
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


@pytest.mark.ungraded
@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_graded_file_has_the_solution_public_api(lab: Path) -> None:
    graded = labimpl.impl_path_for(lab)
    if labimpl.owning_lab(graded) not in (None, lab.resolve()):
        pytest.skip(f"LAB_IMPL names a file of another lab ({graded})")
    want, have = public_api(lab / "solution.py"), public_api(graded)
    missing = {k: v for k, v in want.items() if k not in have}
    changed = {k: (want[k], have[k]) for k in want if k in have and want[k] != have[k]}
    assert not missing and not changed, (
        f"{graded.name} must expose the same public API as the solution; "
        f"missing: {missing}; changed (solution, yours): {changed}"
    )


@pytest.mark.ungraded
@pytest.mark.parametrize("lab", LABS, ids=[lab.name for lab in LABS])
def test_starter_has_the_solution_public_api(lab: Path) -> None:
    """Whatever LAB_IMPL grades, the shipped starter must match the solution's API (CI runs the solution)."""
    want, have = public_api(lab / "solution.py"), public_api(lab / "starter.py")
    assert want == have, (
        "starter.py must expose exactly the solution's public API; "
        f"only in solution: {sorted(set(want) - set(have))}; only in starter: {sorted(set(have) - set(want))}; "
        f"changed: {sorted(k for k in want.keys() & have.keys() if want[k] != have[k])}"
    )


@pytest.mark.ungraded
def test_every_lab_is_present() -> None:
    names = [lab.name for lab in lab_dirs()]
    assert names == ["lab-01-kv-handoff", "lab-02-pd-pair", "lab-03-disagg-economics"], names

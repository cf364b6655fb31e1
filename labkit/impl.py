"""LAB_IMPL: which implementation the tests grade.

``LAB_IMPL`` is ``solution`` (default), ``starter``, or a path to any implementation file (an
instructor's mutant, a student's copy). Tests never import ``starter``/``solution`` by name: three labs
share one pytest process, so each file is loaded under a module name unique to its path.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from labkit import LABS_DIR

ALLOWED_NAMES = ("solution", "starter")
ENV_VAR = "LAB_IMPL"


class LabImplError(ValueError):
    """LAB_IMPL names something that cannot be graded."""


def lab_impl_setting() -> str:
    return os.environ.get(ENV_VAR, "solution").strip() or "solution"


def describe_allowed() -> str:
    return (
        f"{ENV_VAR} must be one of {', '.join(repr(n) for n in ALLOWED_NAMES)} "
        "or a path to an implementation .py file "
        "(e.g. LAB_IMPL=starter pytest phase-15-disaggregated-serving/labs/lab-03-disagg-economics)"
    )


def validate_setting(value: str) -> None:
    """Raise LabImplError with the one clear message when ``value`` is not gradeable."""
    if value in ALLOWED_NAMES:
        return
    if value.endswith(".py") and Path(value).is_file():
        return
    raise LabImplError(f"LAB_IMPL={value!r} is not valid. {describe_allowed()}.")


def owning_lab(path: Path) -> Path | None:
    """The lab folder a file lives in, or None when it lives outside every lab."""
    path = path.resolve()
    labs = LABS_DIR.resolve()
    if labs in path.parents:
        rel = path.relative_to(labs)
        return labs / rel.parts[0]
    return None


def impl_path_for(lab_dir: Path, value: str | None = None) -> Path:
    """The file graded for ``lab_dir`` under the LAB_IMPL ``value``."""
    value = lab_impl_setting() if value is None else value
    validate_setting(value)
    if value in ALLOWED_NAMES:
        return lab_dir / f"{value}.py"
    return Path(value).resolve()


def _module_name_for(path: Path) -> str:
    # unique per file, readable in tracebacks: labimpl.lab_03_disagg_economics.solution
    lab = owning_lab(path)
    parts = [
        lab.name if lab else "external",
        *path.resolve().relative_to(lab or path.parent).with_suffix("").parts,
    ]
    return "labimpl." + ".".join(re.sub(r"\W", "_", p) for p in parts)


def load_module(path: Path) -> ModuleType:
    """Load (once) the implementation file at ``path`` under a collision-free module name."""
    path = Path(path).resolve()
    name = _module_name_for(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LabImplError(f"cannot load implementation file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered first: dataclasses look their module up while executing
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def impl_label(path: Path) -> str:
    """How demos name the implementation that ran: 'solution.py (the reference)', 'your starter.py', or the path."""
    path = Path(path)
    if path.name == "solution.py" and owning_lab(path) is not None:
        return "solution.py (the reference)"
    if path.name == "starter.py" and owning_lab(path) is not None:
        return "your starter.py"
    return str(path)


def whose(path: Path) -> str:
    """The possessive a demo puts before a task's function: "solution.py's" for the reference, else "your".

    Example: ``f"{whose(p)} proxy"`` prints "your proxy" only when the student's code is what ran.
    """
    path = Path(path)
    return "solution.py's" if path.name == "solution.py" and owning_lab(path) is not None else "your"

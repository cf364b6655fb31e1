"""Support code for the Phase 15 labs' grading harness (not student work).

- ``labkit.impl``: the one seam between tests and student code (``LAB_IMPL``).
- ``labkit.starter_gen``: builds each ``starter.py`` from its ``solution.py`` (BEGIN/END SOLUTION fences).
- ``labkit.integrity``: ``make check-starter`` and ``make check-mutants``.
- ``labkit.mutants``: lets an instructor's mutant inherit the solution and break one thing.
- ``labkit.scoreboard``: the end of every grading run: failures one line each, the per-task scoreboard.
- ``labkit.docs``: ``make docs`` / ``make docs-check``, the numbers the READMEs quote, from the data.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PHASE_DIR = REPO_ROOT / "phase-15-disaggregated-serving"
LABS_DIR = PHASE_DIR / "labs"


def lab_dirs() -> list[Path]:
    """Every lab folder, in curriculum folder order (lab-01, lab-02, lab-03)."""
    return sorted(p for p in LABS_DIR.iterdir() if p.is_dir() and p.name.startswith("lab-"))


def lab_short_name(lab_dir: Path) -> str:
    """'lab-03-disagg-economics' -> 'lab-03'."""
    return "-".join(lab_dir.name.split("-")[:2])

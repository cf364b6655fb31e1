"""The quiet-machine guard every recorder shares (``labkit.machine``; given code, ungraded)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from labkit import machine
from labkit.machine import OWN_LOAD_BOUND, QUIET_START_LOAD, LoadWatch, bf16_matmul, judge, runnable_threads

pytestmark = pytest.mark.ungraded


def test_bf16_matmul_names_the_best_unit_the_flags_offer():
    assert bf16_matmul(["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]) == "amx"
    assert bf16_matmul(["avx2", "avx512f", "avx512_bf16"]) == "avx512_bf16"
    assert bf16_matmul(["avx2", "fma"]) == "fp32" and bf16_matmul([]) == "fp32"


def test_judge_states_each_rule_and_its_edges():
    assert judge(0.99, [(4.3, OWN_LOAD_BOUND)]) == []  # the bound itself is still explained
    assert [r.split(":")[0] for r in judge(QUIET_START_LOAD, [])] == ["start"]  # 1.0 is not < 1.0
    assert [r.split(":")[0] for r in judge(None, [])] == ["start"]  # not recorded: cannot be shown quiet
    reasons = judge(0.5, [(2.0, 4.0), (4.0, OWN_LOAD_BOUND + 0.01)])
    assert len(reasons) == 1 and "after run 2" in reasons[0], reasons


def _watch(monkeypatch, loads, start=0.2):
    seq = iter([[start, 0, 0], *([x, 0, 0] for x in loads)])
    monkeypatch.setattr(machine, "loadavg", lambda: next(seq))
    return LoadWatch(sample=False)


def test_watch_is_quiet_when_the_runs_stay_within_the_bound(monkeypatch):
    w = _watch(monkeypatch, [0.3, 4.2, 4.2, 4.4])
    for label in ("a", "b"):
        with w.run(label) as row:
            pass
    v = w.verdict()
    assert v["verdict"] == "quiet" and v["reasons"] == [], v
    assert row["loadavg_before"][0] == 4.2 and row["loadavg_after"][0] == 4.4 and row["verdict"] == "quiet"


def test_watch_is_noisy_when_it_starts_busy_or_a_run_leaves_the_bound(monkeypatch):
    v = _watch(monkeypatch, [1.2, 1.3], start=1.2)
    with v.run("a"):
        pass
    assert v.verdict()["verdict"] == "noisy" and v.verdict()["reasons"][0].startswith("start:")
    w = _watch(monkeypatch, [0.3, 6.1])
    with w.run("b") as row:
        pass
    assert row["verdict"] == "noisy" and w.verdict()["verdict"] == "noisy", w.verdict()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_runnable_threads_counts_a_busy_child_as_the_recorders_own():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"]
    )
    try:
        seen = []
        for _ in range(20):
            got = runnable_threads()
            assert got is not None
            seen.append(got[0])
            if got[0] >= 1:
                break
        assert max(seen) >= 1, f"the busy child was never counted as own: {seen}"
    finally:
        child.kill()
        child.wait()


def _published():
    from pdpair.evidence.capture import CAPTURE_DIR

    return [CAPTURE_DIR, *sorted(d for d in CAPTURE_DIR.glob("planned*") if (d / "manifest.json").is_file())]


@pytest.mark.parametrize("folder", _published(), ids=lambda d: d.name)
def test_no_capture_claims_quiet_with_a_load_above_its_bound(folder):
    """Every published capture says whether its machine was quiet, and none says quiet while a load it
    recorded breaks a rule: a figure from a noisy one is quoted "under load" (or re-recorded)."""
    import json

    manifest = json.loads((folder / "manifest.json").read_text())
    quiet = manifest.get("quiet")
    assert quiet and quiet["verdict"] in ("quiet", "noisy"), (
        f"{folder}: the manifest must carry a quiet verdict"
    )
    assert (quiet["verdict"] == "noisy") == bool(quiet["reasons"]), quiet
    loads = [
        (row["loadavg_1_5_15"]["before"][0], row["loadavg_1_5_15"]["after"][0])
        for run in manifest["runs"]
        for setup in manifest["setups"]
        if (row := manifest["results"][setup][str(run)]).get("loadavg_1_5_15")
    ]
    start = (quiet.get("loadavg_start") or [loads[0][0] if loads else None])[0]
    bound = quiet["rules"]["own_load_bound"]
    if judge(start, loads, bound):
        assert quiet["verdict"] == "noisy", (
            f"{folder}: recorded loads {loads} break the rules, yet it says quiet"
        )


def test_the_bound_grows_with_what_the_recorders_own_threads_explain(monkeypatch):
    """Where /proc shows the recorder's own threads keeping the load up (a start-up compiling with a
    thread per core), the bound is their 1-minute average + 1, not the fixed 5.0."""
    w = _watch(monkeypatch, [3.0, 6.5, 6.5, 7.5])
    w._proc, w._own_avg = True, 6.0  # as the sampler would have found
    with w.run("a") as row:
        pass
    assert row["own_load_bound"] == 7.0 and row["verdict"] == "quiet", row
    with w.run("b") as row:
        pass
    assert row["verdict"] == "noisy" and "7.5" in row["reasons"][0], row

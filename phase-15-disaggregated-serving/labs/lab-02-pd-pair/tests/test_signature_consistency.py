"""Your recording, graded for consistency - not for a number (no vLLM needed: it reads a capture folder).

The ITL p99 cut of ``pd-conditional`` against ``colocated-chunk64`` is a property of the machine (how
a prefill step compares with a decode step on its CPU: ``docs/signature-on-your-machine.md``), so no fixed number can
grade it. What can be graded is that a recording agrees with the prediction lab-03's twin makes from
the SAME machine's calibration, which ``make record`` runs first and ships in the capture folder
(``<capture>/calibration/profile.json``): the measured cut (YOUR task-5 ``signature``, each run, their
geometric mean) must lie within ``fleetsim.predict.CUT_BAND`` of the twin's (|ln(measured/predicted)|
<= ln 1.25). When it does not, the message names the step whose cost moved between the calibration
and the recording, and the profile terms behind it.

    PDPAIR_CAPTURE=phase-15-disaggregated-serving/labs/lab-02-pd-pair/out/signature make grade LAB=lab-02 TASK=5

Default: the included capture (``captures/cpu-2core``), whose calibration (``calibration/``) is the
calibration run ``make record`` made minutes before its runs, on the same machine.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest

from fleetsim.predict import CUT_BAND, cut, diagnose, measured_all, predict_all, steps_by_class, within_band
from fleetsim.profile import load_profile
from fleetsim.replay import BASELINE
from pdpair.evidence.capture import CAPTURE_DIR, load_capture, timings

CAPTURE = Path(os.environ.get("PDPAIR_CAPTURE") or CAPTURE_DIR)
CONDITIONAL = "pd-conditional"
SEEDS = 8


def _twin(manifest: dict, profile) -> float:
    """The twin's cut for the capture's workload (only the two setups the cut needs are simulated)."""
    plan = {**manifest, "setups": {s: "" for s in (BASELINE, CONDITIONAL)}}
    return cut(predict_all(plan, profile, SEEDS))


def _explain(manifest: dict, runs: dict, profile) -> str:
    rows = diagnose(profile, steps_by_class(manifest, runs))
    lines = [
        f"  {r['class']:10s} step{' (over the plain step)' if r['excess_over_plain'] else ''}: measured "
        f"{r['measured_ms']:.1f} ms, the calibration says {r['profile_ms']:.1f} ms ({r['error']:+.0%}, "
        f"{r['n']} steps) -> {r['terms']}"
        for r in rows
    ]  # fmt: skip
    quiet = manifest.get("quiet") or {}
    if quiet.get("verdict") != "quiet":
        why = "; ".join(quiet.get("reasons", [])[:3]) or "its load was not recorded"
        head = (f"the machine was not quiet while recording ({why}): the calibration and the recording saw "
                "different machines, so re-record on a quiet one (make record) before reading the terms below")  # fmt: skip
    else:
        head = (
            f"the term that moved most: {rows[0]['terms']}" if rows else "no decode steps could be classified"
        )
    return f"{head}\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def capture():
    if not (CAPTURE / "manifest.json").is_file():
        pytest.fail(f"no capture at {CAPTURE} (PDPAIR_CAPTURE): record one with `make record`")
    manifest, runs = load_capture(CAPTURE)
    missing = {BASELINE, CONDITIONAL} - set(manifest["setups"])
    if missing:
        pytest.fail(f"{CAPTURE} has no {sorted(missing)} runs: the cut needs both (make record records them)")
    profile_path = CAPTURE / "calibration" / "profile.json"
    if not profile_path.is_file():
        pytest.fail(
            f"{CAPTURE} has no calibration/profile.json: record with `make record` (it calibrates the twin on "
            "your machine first), or calibrate separately with tools/calibrate_profile.py --live --out "
            f"{CAPTURE / 'calibration'} on the machine that recorded it"
        )
    return manifest, runs, load_profile(profile_path)


@pytest.mark.lab02_task5
def test_your_recording_cuts_the_tail_as_its_own_calibration_predicts(impl, capture):
    manifest, runs, profile = capture
    yours = []
    for run in manifest["runs"]:
        sig = impl.signature(timings(impl, runs[(BASELINE, run)]), timings(impl, runs[(CONDITIONAL, run)]))
        yours.append(1 / sig.itl_p99_ratio)
    measured = math.exp(sum(map(math.log, yours)) / len(yours))
    reference = cut(measured_all(manifest, runs))  # the same figures by the given percentile, not yours
    predicted = _twin(manifest, profile)
    assert within_band(measured, reference, 0.02), (
        f"YOUR signature() gives a cut of x{measured:.2f} ({', '.join(f'x{c:.2f}' for c in yours)} per run); "
        f"the recorder's own figures give x{reference:.2f}: check your pooled nearest-rank ITL p99 first"
    )
    assert within_band(measured, predicted), (
        f"{CAPTURE}: measured cut x{measured:.2f} (runs {', '.join(f'x{c:.2f}' for c in yours)}), the twin "
        f"calibrated on the same machine predicts x{predicted:.2f}: {measured / predicted - 1:+.0%}, outside "
        f"the band of +-{CUT_BAND:.0%}.\n" + _explain(manifest, runs, profile)
    )


@pytest.mark.ungraded
def test_an_inconsistent_calibration_is_refused_and_the_moved_term_named(capture):
    """A calibration from a CPU whose prefill compute is 4x cheaper (say AMX-class bf16 matmuls) than
    the recording's: the cut falls out of the band and the diagnosis blames the prefill terms, not the
    plain decode step."""
    manifest, runs, profile = capture
    wrong = dataclasses.replace(profile, per_prefill_token_ms=profile.per_prefill_token_ms / 4,
                                per_prefill_pair_ms=profile.per_prefill_pair_ms / 4,
                                per_prefill_token_sq_ms=profile.per_prefill_token_sq_ms / 4)  # fmt: skip
    measured = cut(measured_all(manifest, runs))
    assert within_band(measured, _twin(manifest, profile)), "the capture agrees with its own calibration"
    assert not within_band(measured, _twin(manifest, wrong)), "a 4x cheaper prefill must move the cut"
    rows = diagnose(wrong, steps_by_class(manifest, runs))
    assert rows[0]["class"] in ("chunk", "local join") and rows[0]["error"] > 0.5, rows
    plain = next(r for r in rows if r["class"] == "plain")
    # the plain step is untouched by the 4x: what remains is calibration-vs-recording noise (+12% on the
    # quiet 2026-12-06 recording, whose short calibration ran on an idle pair), far below the prefill's > 0.5
    assert abs(plain["error"]) < 0.25, f"the decode step did not move: {plain}"

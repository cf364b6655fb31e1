"""The twin against the real pair: fleetsim with the calibrated CPU profile replays lab-02's capture.

For four of the recorded regimes of ``lab-02-pd-pair/captures/cpu-2core`` (the fifth, ``pd-planned``, is
set beside the twin by lab-02's ``tools/plot_signature.py``) the twin runs the
capture's own workload (the manifest's) on the same fleet, with 8 seeds; its prediction of a metric is
the median over the seeds, the measurement is the mean of the capture's two runs. Tolerances (stated
in the README): ITL p50 within 15%, ITL p99 within 25%, short-prompt TTFT p50 within 25%, long-prompt
TTFT p50 within 15%; and wherever the two measured regimes differ clearly (by more than 25%), the twin
orders them the same way. The profile was fitted from run 1 of three regimes (see calibrate_profile.py):
what is checked here is everything else those fits did not pin. ``pytest -s`` prints the error table.

Honest limit: the short-prompt TTFT p50 is the least accurate figure (the twin is 14-18% high on
colocated, colocated-chunk64 and pd-all). On the recording this capture replaced (2026-11-27, prefill
~2.2x slower) pd-all's was a resonance of the closed loop - whether stream restarts land on a long
prefill - and swung 366-1019 ms across the twin's seeds as it swung 657 vs 951 ms between the two real
runs; on this capture it is steady (116-117 ms over the 8 seeds, 105.0 / 99.6 ms measured).
"""

from __future__ import annotations

import itertools
import statistics

import pytest

from fleetsim.fleet import Fleet, simulate
from fleetsim.profile import cpu_profile
from fleetsim.workload import Streams
from labkit.capture import load_capture, summarize

pytestmark = [pytest.mark.ungraded, pytest.mark.slow]

REGIMES = {
    "colocated": Fleet(colocated=2),
    "colocated-chunk64": Fleet(colocated=2, budget=64),
    "pd-all": Fleet(prefill=1, decode=1),
    "pd-conditional": Fleet(prefill=1, decode=1, threshold=256),
}
TOLERANCE = {"itl_p50_ms": 0.15, "itl_p99_ms": 0.25, "ttft_p50_ms": 0.25, "long_ttft_p50_ms": 0.15}
SEEDS = range(1, 9)
CLEAR_DIFFERENCE = 0.25


@pytest.fixture(scope="module")
def twin_vs_capture() -> dict[str, dict[str, tuple[float, float]]]:
    manifest, runs = load_capture()
    assert manifest["local_prefill_max_tokens"] == REGIMES["pd-conditional"].threshold
    duration = manifest["workload"]["duration_s"]
    profile = cpu_profile()
    table = {}
    for name, fleet in REGIMES.items():
        measured = [summarize(runs[(name, r)], duration) for r in manifest["runs"]]
        sims = [
            summarize(simulate(fleet, profile, streams=Streams.from_manifest(manifest["workload"], s), seed=s).records(), duration)
            for s in SEEDS
        ]  # fmt: skip
        table[name] = {
            k: (statistics.mean(m[k] for m in measured), statistics.median(s[k] for s in sims))
            for k in TOLERANCE
        }
    print("\ntwin vs capture (measured = mean of 2 runs, twin = median of 8 seeds; ms)")
    for name, row in table.items():
        print(
            f"  {name:18s} "
            + "  ".join(f"{k[:-3]} {m:7.1f} -> {t:7.1f} ({t / m - 1:+.0%})" for k, (m, t) in row.items())
        )
    return table


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("metric", list(TOLERANCE))
def test_twin_reproduces_regime_metric(twin_vs_capture, regime, metric):
    measured, twin = twin_vs_capture[regime][metric]
    err = twin / measured - 1
    assert abs(err) <= TOLERANCE[metric], (
        f"{regime} {metric}: twin {twin:.1f} ms vs measured {measured:.1f} ms ({err:+.0%}), "
        f"tolerance +-{TOLERANCE[metric]:.0%}"
    )


@pytest.mark.parametrize("metric", list(TOLERANCE))
def test_twin_orders_regimes_like_the_capture(twin_vs_capture, metric):
    for a, b in itertools.combinations(REGIMES, 2):
        (ma, ta), (mb, tb) = twin_vs_capture[a][metric], twin_vs_capture[b][metric]
        if max(ma, mb) / min(ma, mb) - 1 > CLEAR_DIFFERENCE:
            assert (ma < mb) == (ta < tb), (
                f"{metric}: measured {a} {ma:.1f} vs {b} {mb:.1f}, twin {ta:.1f} vs {tb:.1f}"
            )

"""The twin beside a lab-02 capture: the fleet each recorded setup ran, and the twin's figures for it.

``fleet_for(setup, manifest)`` maps a setup of ``lab-02-pd-pair/record_signature.py`` to the fleet the
twin simulates (the same instances, budgets and routing rule); ``predict`` runs the capture's own
workload (its manifest) on it over several seeds and returns the median of each figure, in the
capture's units (``labkit.capture.summarize``: ms). ``twin_table`` puts measured (mean of the capture's
runs) and predicted side by side, and for every P/D setup the two numbers the lab's goal is stated in:
the ITL p99 cut against the chunked colocated baseline of the SAME capture (x lower) and the
short-prompt TTFT p50 toll against it (%). Ratios within one capture are what a capture recorded on a
busy or a faster machine can still be compared on: the twin's profile is calibrated on one quiet day.
Example: ``twin_table(load_capture(d)[0], load_capture(d)[1])`` for the capture folder ``d``.
"""

from __future__ import annotations

import dataclasses
import statistics

from fleetsim.fleet import Fleet, simulate
from fleetsim.workload import Streams

METRICS = ("ttft_p50_ms", "itl_p50_ms", "itl_p99_ms")
BASELINE = "colocated-chunk64"


def fleet_for(setup: str, manifest: dict) -> Fleet:
    """The twin's fleet for one recorded setup; ValueError for a setup the twin does not model."""
    local_max = manifest.get("local_prefill_max_tokens", 256)
    fleets = {
        "colocated": Fleet(colocated=2),
        "colocated-chunk64": Fleet(colocated=2, budget=64),
        "pd-all": Fleet(prefill=1, decode=1),
        "pd-conditional": Fleet(prefill=1, decode=1, threshold=local_max),
        "pd-planned": Fleet(
            prefill=1, decode=1, threshold=local_max, decode_budget=manifest.get("planned_decode_budget", 24)
        ),
    }
    if setup not in fleets:
        raise ValueError(f"setup: the twin has no fleet for {setup!r}; known: {', '.join(fleets)}")
    return fleets[setup]


def predict(setup: str, manifest: dict, profile, seeds: int = 8) -> dict[str, float]:
    """The twin's median over ``seeds`` seeds (1..seeds) of each figure of ``METRICS``, in ms."""
    from labkit.capture import summarize  # noqa: PLC0415

    fleet = fleet_for(setup, manifest)
    duration = manifest["workload"]["duration_s"]
    sims = []
    for s in range(1, seeds + 1):
        streams = dataclasses.replace(Streams.from_manifest(manifest["workload"]), seed=s)
        sims.append(summarize(simulate(fleet, profile, streams=streams, seed=s).records(), duration))
    return {k: statistics.median(x[k] for x in sims) for k in METRICS}


def twin_table(manifest: dict, runs: dict, profile=None, seeds: int = 8) -> list[dict]:
    """One row per setup of the capture: measured (mean over its runs) and twin for each of ``METRICS``,
    and for P/D setups the cut and toll against the capture's own ``colocated-chunk64`` (None without it)."""
    from fleetsim.profile import cpu_profile  # noqa: PLC0415
    from labkit.capture import summarize  # noqa: PLC0415

    profile = profile or cpu_profile()
    duration = manifest["workload"]["duration_s"]
    rows = []
    for setup in manifest["setups"]:
        measured = [summarize(runs[(setup, r)], duration) for r in manifest["runs"]]
        row = {"setup": setup, "measured": {k: statistics.mean(m[k] for m in measured) for k in METRICS}}
        row["twin"] = predict(setup, manifest, profile, seeds)
        rows.append(row)
    base = next((r for r in rows if r["setup"] == BASELINE), None)
    for row in rows:
        row["cut"] = row["toll"] = None
        if base is not None and row["setup"].startswith("pd"):
            row["cut"] = {
                k: base[k]["itl_p99_ms"] / row[k]["itl_p99_ms"] for k in ("measured", "twin")
            }  # fmt: skip
            row["toll"] = {
                k: row[k]["ttft_p50_ms"] / base[k]["ttft_p50_ms"] - 1 for k in ("measured", "twin")
            }  # fmt: skip
    return rows


def print_twin_table(rows: list[dict], seeds: int = 8) -> None:
    print(f"| setup | ITL p50 ms (measured / twin) | ITL p99 ms | short TTFT p50 ms | ITL p99 cut vs {BASELINE} "
          f"| TTFT toll vs {BASELINE} |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        m, t = r["measured"], r["twin"]
        cells = [f"{m[k]:.1f} / {t[k]:.1f}" for k in ("itl_p50_ms", "itl_p99_ms", "ttft_p50_ms")]
        cut = f"x{r['cut']['measured']:.2f} / x{r['cut']['twin']:.2f}" if r["cut"] else "-"
        toll = f"{r['toll']['measured']:+.0%} / {r['toll']['twin']:+.0%}" if r["toll"] else "-"
        print(f"| {r['setup']} | " + " | ".join(cells) + f" | {cut} | {toll} |")
    print(
        f"(measured = mean of the capture's runs; twin = median of {seeds} seeds on the calibrated CPU profile)"
    )

"""Predict a signature recording from a calibration, and judge a recording against its prediction.

``predict_all(manifest, profile)`` is the twin's figure for every setup a lab-02 capture's manifest
names (``fleetsim.replay.predict``: TTFT p50, ITL p50, ITL p99, median of 8 seeds) - it needs only the
manifest's workload, so ``make record`` prints it BEFORE recording. ``measured_all`` reads the same
figures off a capture (mean of its runs); ``compare`` puts them side by side with the error.

The lab's claim is the CUT: chunked colocated's ITL p99 over conditional P/D's (``cut``). A recording
is CONSISTENT with the twin when its measured cut lies within ``CUT_BAND`` of the cut the twin predicts
from the SAME machine's calibration: |ln(measured / predicted)| <= ln(1 + CUT_BAND). How the band was
derived (``lab-02-pd-pair/docs/signature-on-your-machine.md``): the twin's error on the cut over the recordings we have
calibrations for, plus the spread of one 120 s run's p99 (two runs of one setup differ by up to ~5%).

``steps_by_class`` reads a capture's decode steps by what they carried (a cluster of token arrivals on
one instance is a step); ``diagnose`` sets them beside what the profile says such a step costs, which
names the term that is off when the cut is not: the plain step (``step_ms_fixed``: the machine ran
slower or faster than when it was calibrated), the chunk step over the plain one (``per_prefill_token_ms``
and ``per_prefill_pair_ms``: chunked colocated's tail), the local join step over the plain one
(``per_prefill_token_ms`` x 32 and ``per_join_ms``: conditional P/D's tail).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from fleetsim.profile import chunk_pairs
from fleetsim.replay import BASELINE, METRICS, predict

CUT_BAND = 0.25  # |ln(measured / predicted)| <= ln(1.25): see the module docstring
CONDITIONAL = "pd-conditional"
STEP_CLUSTER_S = 0.005  # token arrivals closer than this on one instance came from one step


def predict_all(manifest: dict, profile, seeds: int = 8) -> dict[str, dict[str, float]]:
    """The twin's ``METRICS`` (ms) for every setup in ``manifest["setups"]`` (only its workload,
    ``local_prefill_max_tokens`` and ``planned_decode_budget`` are read)."""
    return {s: predict(s, manifest, profile, seeds) for s in manifest["setups"]}


def measured_all(manifest: dict, runs: dict) -> dict[str, dict[str, float]]:
    """Each setup's ``METRICS`` (ms) from a capture: the mean over its runs."""
    from labkit.capture import summarize  # noqa: PLC0415

    out = {}
    for setup in manifest["setups"]:
        per_run = [summarize(runs[(setup, r)], manifest["workload"]["duration_s"]) for r in manifest["runs"]]
        out[setup] = {k: statistics.mean(m[k] for m in per_run) for k in METRICS}
    return out


def cut(
    figures: dict[str, dict[str, float]], after: str = CONDITIONAL, before: str = BASELINE
) -> float | None:
    """How many times lower ``after``'s ITL p99 is than ``before``'s (None without both)."""
    if after not in figures or before not in figures:
        return None
    return figures[before]["itl_p99_ms"] / figures[after]["itl_p99_ms"]


def compare(predicted: dict, measured: dict) -> list[dict]:
    """One row per setup and metric: predicted, measured, error (predicted / measured - 1)."""
    return [
        {"setup": s, "metric": k, "predicted": predicted[s][k], "measured": measured[s][k],
         "error": predicted[s][k] / measured[s][k] - 1}
        for s in predicted if s in measured for k in METRICS
    ]  # fmt: skip


def within_band(measured_cut: float, predicted_cut: float, band: float = CUT_BAND) -> bool:
    return abs(math.log(measured_cut / predicted_cut)) <= math.log(1 + band)


def print_comparison(predicted: dict, measured: dict | None = None, band: float = CUT_BAND) -> None:
    """The twin's figures per setup (and the measured ones beside them, with the error, when given)."""
    names = {"ttft_p50_ms": "TTFT p50", "itl_p50_ms": "ITL p50", "itl_p99_ms": "ITL p99"}
    if measured is None:
        print("| setup | " + " | ".join(f"{n} ms (twin)" for n in names.values()) + " |")
        print("|---|" + "---|" * len(names))
        for s, row in predicted.items():
            print(f"| {s} | " + " | ".join(f"{row[k]:.1f}" for k in names) + " |")
    else:
        print("| setup | " + " | ".join(f"{n} ms: twin / measured (error)" for n in names.values()) + " |")
        print("|---|" + "---|" * len(names))
        for s, row in predicted.items():
            if s in measured:
                cells = [
                    f"{row[k]:.1f} / {measured[s][k]:.1f} ({row[k] / measured[s][k] - 1:+.0%})" for k in names
                ]
                print(f"| {s} | " + " | ".join(cells) + " |")
    pc = cut(predicted)
    if pc is not None:
        line = f"ITL p99 cut, {CONDITIONAL} vs {BASELINE}: twin x{pc:.2f}"
        if measured is not None and (mc := cut(measured)) is not None:
            verdict = "within" if within_band(mc, pc, band) else "OUTSIDE"
            line += f", measured x{mc:.2f} ({pc / mc - 1:+.0%}): {verdict} the twin's band of +-{band:.0%}"
        print(line)


# ----------------------------------------------------------------------------- steps read off a capture


def _steps(records, instance: str):
    """(start_s, end_s, decodes, first tokens by (kind, mode)) of one instance's steps."""
    tokens = sorted(
        (t, (r.kind, r.mode) if i == 0 else None)
        for r in records
        if r.ok and r.instance == instance
        for i, t in enumerate(r.arrivals_s)
    )  # fmt: skip
    ends: list[list] = []
    for t, joined in tokens:
        if not ends or t - ends[-1][0] > STEP_CLUSTER_S:
            ends.append([t, 0, []])
        if joined:
            ends[-1][2].append(joined)
        else:
            ends[-1][1] += 1
    return [(a[0], b[0], b[1], b[2]) for a, b in zip(ends, ends[1:], strict=False)]


def steps_by_class(manifest: dict, runs: dict) -> dict[str, dict]:
    """A capture's decode-side steps by class, each with its median ms, count and median composition:

    - ``plain``: no request joined (every setup's decoding instances);
    - ``local join``: exactly one short prompt joined, prefilled in the step (``pd-conditional``'s decode);
    - ``chunk``: a step of ``colocated-chunk64`` that carried a chunk of a long prompt (between its send
      and its first token, nothing else joining), with the chunk's size and position from walking back
      from the first token (each step carried 64 - its decodes tokens).
    Returns {class: {"ms": median, "n": count, "decodes": median batch, "tokens": ..., "pairs": ...}}."""
    short = manifest["workload"]["short_prompt_tokens"]
    long_len = manifest["workload"]["long_prompt_tokens"]
    got: dict[str, list[tuple[float, int, int, int]]] = defaultdict(list)  # ms, decodes, tokens, pairs
    for (setup, _run), records in runs.items():
        for inst in sorted({r.instance for r in records if r.ok} - {"prefill"}):
            steps = _steps(records, inst)
            for a, b, decodes, joined in steps:
                ms = (b - a) * 1e3
                if not joined and decodes:
                    got["plain"].append((ms, decodes, 0, 0))
                elif setup == CONDITIONAL and joined == [("short", "local")]:
                    got["local join"].append((ms, decodes, short, chunk_pairs(0, short)))
            if setup == BASELINE:
                for L in (r for r in records if r.ok and r.kind == "long" and r.instance == inst):
                    got["chunk"] += _chunks(steps, L, long_len)
    out = {}
    for cls, rows in got.items():
        out[cls] = {"ms": statistics.median(r[0] for r in rows), "n": len(rows),
                    "decodes": round(statistics.median(r[1] for r in rows)),
                    "tokens": round(statistics.median(r[2] for r in rows)),
                    "pairs": round(statistics.median(r[3] for r in rows))}  # fmt: skip
    return out


def _chunks(steps, L, long_len: int, budget: int = 64) -> list[tuple[float, int, int, int]]:
    """The full chunk steps of long prompt ``L`` on a ``budget``-token instance: the step that streamed
    its first token carried the last (partial) chunk; walking back, each earlier step carried (budget -
    its decodes) tokens while they add up to less than the prompt. [] when another request joined one
    of those steps or the sizes do not add up."""
    window = [s for s in steps if L.sent_s < s[1] <= L.arrivals_s[0] + STEP_CLUSTER_S]
    if (
        not window
        or abs(window[-1][1] - L.arrivals_s[0]) > STEP_CLUSTER_S
        or window[-1][3] != [("long", L.mode)]
    ):
        return []
    full, seen = [], 0
    for a, b, decodes, joined in reversed(window[:-1]):
        c = budget - decodes
        if joined or seen + c >= long_len:
            break
        full.append(((b - a) * 1e3, decodes, c))
        seen += c
    if not 0 < long_len - seen <= budget - window[-1][2]:
        return []
    out, start = [], 0
    for ms, decodes, c in reversed(full):
        out.append((ms, decodes, c, chunk_pairs(start, c)))
        start += c
    return out


TERMS_OF = {
    "plain": "step_ms_fixed / per_decode_seq_ms (the decode step: weights read once per step)",
    "chunk": "per_prefill_token_ms / per_prefill_pair_ms (a 64-token chunk's compute: chunked colocated's tail)",
    "local join": "per_prefill_token_ms x 32 + per_join_ms (a local prefill in a decode step: conditional P/D's tail)",
}


def diagnose(profile, classes: dict[str, dict]) -> list[dict]:
    """Each measured step class beside the profile's cost for the same composition. For the chunk and
    local-join classes the error is of the EXCESS over the plain step (what the prefill added), so a
    machine that was uniformly slower shows up once, in ``plain``. Sorted by |error|, largest first."""
    rows = []
    plain = classes.get("plain")
    plain_pred = plain and profile.step_ms(0, 0, plain["decodes"], 0)
    for cls, c in classes.items():
        pred = profile.step_ms(c["tokens"], c["pairs"], c["decodes"], 0, int(cls == "local join"))
        meas = c["ms"]
        if cls != "plain" and plain:
            pred, meas = pred - plain_pred, meas - plain["ms"]
        if meas <= 0 or pred <= 0:
            continue
        rows.append({"class": cls, "measured_ms": round(meas, 1), "profile_ms": round(pred, 1),
                     "error": meas / pred - 1, "terms": TERMS_OF.get(cls, ""), "n": c["n"],
                     "excess_over_plain": cls != "plain"})  # fmt: skip
    return sorted(rows, key=lambda r: -abs(math.log(1 + r["error"])))

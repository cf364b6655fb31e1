"""Read a wire capture (``record_wire.py``): a table of measured vs predicted NIXL read time per link
rate and prompt length, the penalty against lab-03's +10% limit, the break-even rate, and two plots.

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/plot_wire.py [--capture DIR]

Prediction here = the bytes NIXL actually read x 8 / the shaped rate (the link's line rate, nothing
else); lab-03's graded test makes the same prediction from the student's own functions.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[1]  # the lab folder
CAPTURE = LAB / "captures" / "wire-cpu"


def load(capture: Path = CAPTURE) -> tuple[dict, list[dict]]:
    manifest = json.loads((capture / "manifest.json").read_text())
    rows = [json.loads(line) for line in (capture / "wire.jsonl").read_text().splitlines() if line.strip()]
    return manifest, rows


def summary(rows: list[dict], max_penalty: float = 0.10) -> list[dict]:
    """One dict per (rate, prompt length), medians over repetitions: bytes, measured and predicted read
    ms, their ratio, TTFT, colocated TTFT, penalty (measured read / colocated TTFT) and the verdict
    that penalty gives (``YES`` within ``max_penalty``, else ``NO_SLOW_LINK``). Unshaped rows have no
    prediction."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == 200 and r["nixl_reads"] >= 1:
            groups.setdefault((r["rate_mbit"], r["prompt_tokens"]), []).append(r)
    out = []
    for (rate, n), rs in sorted(groups.items(), key=lambda kv: (-(kv[0][0] or math.inf), kv[0][1])):
        read = statistics.median(r["nixl_read_ms"] for r in rs)
        nbytes = statistics.median(r["kv_bytes"] for r in rs)
        pred = nbytes * 8 / (rate * 1e6) * 1e3 if rate else None
        colo = statistics.median(r["colocated_ttft_ms"] for r in rs)
        penalty = read / colo
        out.append({"rate_mbit": rate, "prompt_tokens": n, "n": len(rs), "kv_bytes": int(nbytes),
                    "read_ms": round(read, 2), "predicted_ms": None if pred is None else round(pred, 2),
                    "ratio": None if pred is None else round(read / pred, 3),
                    "ttft_ms": round(statistics.median(r["ttft_ms"] for r in rs), 1), "colocated_ttft_ms": colo,
                    "penalty": round(penalty, 4), "verdict": "YES" if penalty <= max_penalty else "NO_SLOW_LINK"})  # fmt: skip
    return out


def break_even_mbit(table: list[dict], prompt_tokens: int, max_penalty: float = 0.10) -> float | None:
    """The shaped rate (Mbit/s) at which the measured penalty crosses ``max_penalty`` for this prompt
    length, interpolated in log-log between the two measured rates around it; None if it never does."""
    pts = sorted(
        (t["rate_mbit"], t["penalty"])
        for t in table
        if t["prompt_tokens"] == prompt_tokens and t["rate_mbit"]
    )
    for (r1, p1), (r2, p2) in zip(pts, pts[1:], strict=False):
        if (p1 - max_penalty) * (p2 - max_penalty) <= 0 and p1 != p2:
            f = (math.log(max_penalty) - math.log(p1)) / (math.log(p2) - math.log(p1))
            return math.exp(math.log(r1) + f * (math.log(r2) - math.log(r1)))
    return None


def print_table(table: list[dict], max_penalty: float = 0.10) -> None:
    print(f"{'Mbit/s':>8} {'tokens':>6} {'KV bytes':>10} {'read ms':>9} {'pred ms':>9} {'meas/pred':>9} "
          f"{'TTFT ms':>8} {'coloc ms':>8} {'penalty':>8}  verdict")  # fmt: skip
    for t in table:
        rate = "unshaped" if t["rate_mbit"] is None else f"{t['rate_mbit']:g}"
        pred = "-" if t["predicted_ms"] is None else f"{t['predicted_ms']:.1f}"
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        print(f"{rate:>8} {t['prompt_tokens']:>6} {t['kv_bytes']:>10} {t['read_ms']:>9.1f} {pred:>9} {ratio:>9} "
              f"{t['ttft_ms']:>8.1f} {t['colocated_ttft_ms']:>8.1f} {t['penalty']:>8.1%}  {t['verdict']}")  # fmt: skip
    for n in sorted({t["prompt_tokens"] for t in table}):
        be = break_even_mbit(table, n, max_penalty)
        print(f"break-even ({max_penalty:.0%} penalty), {n} tokens: "
              + ("not crossed in the measured rates" if be is None else f"{be:.0f} Mbit/s"))  # fmt: skip


def plot_capture(capture: Path = CAPTURE) -> list[Path]:
    """Draw ``plots/wire_toll.png`` and ``plots/wire_penalty.png`` into the capture; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    manifest, rows = load(capture)
    limit = manifest.get("max_penalty", 0.10)
    table = summary(rows, limit)
    shaped = [t for t in table if t["rate_mbit"]]
    outdir = capture / "plots"
    outdir.mkdir(parents=True, exist_ok=True)
    prompts = sorted({t["prompt_tokens"] for t in table})
    fig, ax = plt.subplots(figsize=(7, 5))
    for n in prompts:
        pts = sorted(
            (t["rate_mbit"], t["read_ms"], t["predicted_ms"]) for t in shaped if t["prompt_tokens"] == n
        )
        if not pts:
            continue
        line = ax.plot(
            [p[0] for p in pts], [p[2] for p in pts], "--", label=f"{n} tok predicted (bytes x 8 / rate)"
        )
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            "o",
            color=line[0].get_color(),
            label=f"{n} tok measured",
        )
    ax.set(xscale="log", yscale="log", xlabel="link rate (Mbit/s, tc tbf)", ylabel="NIXL read time (ms)",
           title="KV transfer over a shaped link: measured vs predicted")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    toll = outdir / "wire_toll.png"
    fig.savefig(toll, dpi=110, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, n in enumerate(prompts):
        pts = sorted((t["rate_mbit"], t["penalty"]) for t in shaped if t["prompt_tokens"] == n)
        if not pts:
            continue
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{n} tok")
        be = break_even_mbit(table, n, limit)
        if be is not None:
            ax.axvline(be, color=line[0].get_color(), alpha=0.4, linestyle=":")
            ax.annotate(f"{n} tok: {be:.0f} Mbit/s", (be, limit), color=line[0].get_color(), fontsize=8,
                        xytext=(4, 6 + 11 * i), textcoords="offset points")  # fmt: skip
    ax.axhline(limit, color="red", label=f"penalty limit {limit:.0%}: above = NO_SLOW_LINK")
    ax.set(xscale="log", yscale="log", xlabel="link rate (Mbit/s)",
           ylabel="penalty = measured NIXL read / colocated TTFT", title="Where the verdict flips")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    pen = outdir / "wire_penalty.png"
    fig.savefig(pen, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [toll, pen]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", default=str(CAPTURE))
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    capture = Path(args.capture)
    manifest, rows = load(capture)
    print_table(summary(rows, manifest.get("max_penalty", 0.10)), manifest.get("max_penalty", 0.10))
    if not args.no_plots:
        for p in plot_capture(capture):
            print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())

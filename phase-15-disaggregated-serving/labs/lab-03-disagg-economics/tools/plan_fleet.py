"""Plan a fleet: which of colocated N, prefill:decode x:y and conditional thresholds serves the most
traffic within both SLOs (DistServe's goodput), on the serving twin (fleetsim).

    python plan_fleet.py                                   # H100-class analytic profile, 4 GPUs, mix traffic
    python plan_fleet.py --mix rag --ttft-slo-ms 1000 --itl-slo-ms 50
    python plan_fleet.py --profile cpu                     # the CPU pair's calibrated profile (2 cores)
    python plan_fleet.py --trace my_trace.csv              # your traffic (arrival_s, prompt_tokens, output_tokens)

For each configuration it searches the request rate at which at least --target of requests meet both
SLOs (TTFT <= --ttft-slo-ms and no inter-token gap over --itl-slo-ms; fleetsim/planner.py says how),
using YOUR slo_attainment (task 8) and goodput (task 9), then YOUR choose_config (task 10) picks the
winner against colocated N. It prints the table, the winner, and what the winner buys and taxes at the
colocated fleet's goodput rate, and writes two plots (goodput by configuration, attainment vs rate).
Which implementation runs: LAB_IMPL (solution by default, like the tests). Figures are the twin's:
the CPU profile is calibrated against lab-02's capture (test_twin.py prints its error); the H100
profile is analytic, with the assumptions stated in fleetsim/profile.py.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from fleetsim.fleet import simulate
from fleetsim.planner import configurations, fleet_summary, scaled, search
from fleetsim.profile import cpu_profile, h100_profile, load_profile
from fleetsim.workload import MIXES, poisson, read_trace
from labkit.impl import impl_path_for, load_module

HERE = Path(__file__).resolve().parents[1]  # the lab folder

SPAN_X_TTFT_SLO = 60  # each rate's arrivals last at least 60 x the TTFT SLO (up to --max-requests)
DEFAULTS = {  # per profile: instances, SLOs (ms), thresholds, chunked budget of the colocated variant
    "h100": dict(instances=4, ttft=1000.0, itl=50.0, thresholds=[512], chunk=512),
    "cpu": dict(instances=2, ttft=4000.0, itl=150.0, thresholds=[512], chunk=64),
}


def single_request_rate(profile, arrivals, instances: int) -> float:
    """Requests/s the fleet would serve one request at a time per instance: where the search starts."""
    n = len(arrivals)
    p = sum(a.prompt_tokens for a in arrivals) / n
    o = sum(a.output_tokens for a in arrivals) / n
    ms = profile.step_ms(round(p), round(p * p / 2), 0, 0) + o * profile.step_ms(0, 0, 1, round(p + o / 2))
    return instances * 1e3 / ms


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="h100", help="h100 (analytic), cpu (calibrated), or a profile.json")
    ap.add_argument("--model", default="llama-3-8b", help="model of the h100 profile (lab-03's MODELS)")
    ap.add_argument("--mix", default="mix", choices=[*MIXES, "mix"], help="built-in traffic")
    ap.add_argument("--trace", type=Path, help="a CSV/JSONL trace instead of --mix (its rate is rescaled)")
    ap.add_argument("--instances", type=int)
    ap.add_argument("--ttft-slo-ms", type=float)
    ap.add_argument("--itl-slo-ms", type=float)
    ap.add_argument("--target", type=float, default=0.9, help="share of requests that must meet both SLOs")
    ap.add_argument("--thresholds", type=int, nargs="*", help="conditional thresholds to try (prompt tokens)")
    ap.add_argument("--requests", type=int, default=300, help="fewest requests simulated per rate")
    ap.add_argument("--max-requests", type=int, default=4000, help="most requests simulated per rate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "plan")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)

    kind = args.profile if args.profile in DEFAULTS else "cpu"
    d = DEFAULTS[kind]
    if args.profile == "h100":
        profile = h100_profile(args.model)
    elif args.profile == "cpu":
        profile = cpu_profile()
    else:
        profile = load_profile(args.profile)
    instances = args.instances or d["instances"]
    ttft_slo, itl_slo = args.ttft_slo_ms or d["ttft"], args.itl_slo_ms or d["itl"]
    thresholds = d["thresholds"] if args.thresholds is None else args.thresholds
    if args.requests < 20:
        ap.error("--requests: need at least 20 per rate for an attainment figure")
    if args.trace:
        trace = read_trace(args.trace)
        arrivals = lambda n: trace  # noqa: E731 - a trace is what it is: only its rate is rescaled
    else:
        arrivals = lambda n: poisson(1.0, n, args.mix, args.seed)  # noqa: E731
    traffic = f"trace {args.trace}" if args.trace else f"{args.mix}, Poisson"

    impl = load_module(impl_path_for(HERE))
    attain = lambda recs: impl.slo_attainment(recs, ttft_slo, itl_slo)  # noqa: E731
    goodput = lambda rates, att: impl.goodput(rates, att, args.target)  # noqa: E731
    fleets = configurations(instances, thresholds, d["chunk"])
    start = single_request_rate(profile, arrivals(args.requests), instances)
    span = SPAN_X_TTFT_SLO * ttft_slo / 1e3
    print(f"profile {profile.name}; {instances} instances; traffic {traffic}")
    print(
        f"SLOs: TTFT <= {ttft_slo:g} ms and every gap <= {itl_slo:g} ms for >= {args.target:.0%} of requests"
    )

    from tqdm import tqdm

    t0, cpu0 = time.monotonic(), time.process_time()
    curves = []
    try:
        with tqdm(total=len(fleets), desc="goodput search", unit="config", dynamic_ncols=True) as bar:
            sims = [0]

            def tick() -> None:
                sims[0] += 1
                bar.set_postfix(simulations=sims[0])

            for fleet in fleets:
                curves.append(search(fleet, profile, arrivals, attain, goodput, start, args.target, args.requests,
                                     span, args.max_requests, tick=tick))  # fmt: skip
                bar.update()
    except NotImplementedError as exc:
        print(f"\n{exc}\nplan_fleet.py uses your tasks 8-10; implement them or run with LAB_IMPL=solution")
        return 2
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0

    goodputs = {c.fleet.name: c.goodput for c in curves}
    # the baseline is the better colocated fleet (a chunked budget is a flag away, not a new fleet)
    base = max((c for c in curves if c.fleet.colocated), key=lambda c: c.goodput)
    winner = impl.choose_config(goodputs, base.fleet.name)
    print(f"\n{'configuration':28s} {'goodput req/s':>14s}  {'vs ' + base.fleet.name:>22s}")
    for c in curves:
        rel = f"{c.goodput / base.goodput - 1:+.0%}" if base.goodput else "-"
        mark = "  <- winner" if c.fleet.name == winner else ""
        print(f"{c.fleet.name:28s} {c.goodput:14.3g}  {rel:>22s}{mark}")
    print(f"({sum(len(c.points) for c in curves)} simulations in {wall:.1f} s wall, {cpu:.1f} s CPU)")
    win = next(c for c in curves if c.fleet.name == winner)
    report_trade(profile, arrivals, base, win, attain, lambda rate: requests_at(rate, args, span))
    if not args.no_plots:
        write_plots(curves, winner, args.out, args.target, f"{profile.name}, {traffic}")
    return 0


def requests_at(rate: float, args, span: float) -> int:
    """How many requests the search simulates at ``rate`` (fleetsim.planner.search's rule)."""
    return min(max(args.requests, math.ceil(rate * span)), args.max_requests)


def report_trade(profile, arrivals, base, win, attain, n_at) -> None:
    """What the winner buys and taxes: both fleets at the higher of the two goodputs (where it matters)."""
    if win is base:
        print(f"\nwinner: {base.fleet.name} - no split beats it by more than choose_config's margin")
        return
    rate = max(win.goodput, base.goodput)
    if rate <= 0:
        print("\nno configuration met the SLOs at any rate searched: relax the SLOs or add instances")
        return
    work = scaled(arrivals(n_at(rate)), rate)
    recs = [simulate(c.fleet, profile, work).records() for c in (base, win)]
    (a, b), (att_a, att_b) = [fleet_summary(r) for r in recs], [attain(r) for r in recs]
    print(
        f"\nwinner: {win.fleet.name}. Both at {rate:.3g} req/s ({len(work)} requests), against {base.fleet.name}:"
    )
    print(f"  {'attained':12s} {att_a:9.1%} -> {att_b:9.1%}")
    for key, label in [("ttft_p50_ms", "TTFT p50"), ("ttft_p99_ms", "TTFT p99"), ("itl_p50_ms", "ITL p50"),
                       ("itl_p99_ms", "ITL p99"), ("worst_gap_p90_ms", "worst gap p90")]:  # fmt: skip
        verb = "buys" if b[key] < a[key] else "taxes"
        print(f"  {label:12s} {a[key]:9.1f} -> {b[key]:9.1f} ms ({b[key] / a[key] - 1:+.0%}: {verb})")


def write_plots(curves, winner: str, out: Path, target: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [c.fleet.name for c in curves]
    ax.barh(
        names, [c.goodput for c in curves], color=["tab:green" if n == winner else "tab:gray" for n in names]
    )
    ax.invert_yaxis()
    ax.set_xlabel(f"goodput (req/s at >= {target:.0%} SLO attainment)")
    ax.set_title(f"goodput by configuration - {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "goodput.png", dpi=120)
    fig, ax = plt.subplots(figsize=(8, 4))
    for c in curves:
        ax.plot([r for r, _ in c.points], [a for _, a in c.points], "o-", ms=3, label=c.fleet.name,
                lw=2.5 if c.fleet.name == winner else 1)  # fmt: skip
    ax.axhline(target, color="k", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel("SLO attainment")
    ax.set_title(f"SLO attainment vs rate - {title}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "attainment.png", dpi=120)
    plt.close("all")
    print(f"plots: {out / 'goodput.png'}, {out / 'attainment.png'}")


if __name__ == "__main__":
    raise SystemExit(main())

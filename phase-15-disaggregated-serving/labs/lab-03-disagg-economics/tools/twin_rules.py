"""What a router can change on lab-02's CPU pair, as the twin predicts it (the search behind FLEET.md's router table).

    python twin_rules.py [--seeds 8]
    python twin_rules.py --speeds 0.7,1,2,5,10    # pd-conditional and pd-planned on a faster/slower machine

Runs lab-02's signature workload (the capture's manifest) on the calibrated CPU profile for the
chunked colocated baseline and for P/D rules a real router can apply: all prompts remote, the length
threshold (lab-02 task 4's local_prefill_max_tokens), the threshold with a prefill-queue limit in
either direction (a short prompt goes remote while the prefill instance holds fewer than N requests;
or Dynamo's rule, a long prompt goes remote only while the prefill queue holds fewer than N,
an early ai-dynamo/dynamo's examples/llm/components/disagg_router.py; Dynamo 1.6.1's router has it as
prefill_busy_threshold), and one engine setting a router does not
own: decode's own token budget (--max-num-batched-tokens), which cuts a local prefill into chunks
over two decode steps (lab-02's ``pd-planned``); each at the capture's answer length and at 2x and 4x
longer answers. It prints, per rule, ITL p99 as a cut against
the chunked baseline (x lower) and the short-prompt TTFT p50 toll (%), medians over --seeds, and
whether the lab's goal (ITL p99 at least 2.5x lower, toll at most +25%) is met.
These are predictions of the twin, not measurements: test_twin.py states how far the twin is from
the capture (within 5% on every ITL p99; up to 18% on the short-prompt TTFTs).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from pathlib import Path

from fleetsim.fleet import Fleet, simulate
from fleetsim.profile import cpu_profile
from fleetsim.workload import Streams
from labkit.capture import load_capture, summarize

HERE = Path(__file__).resolve().parents[1]  # the lab folder

BASELINE = Fleet(colocated=2, budget=64)
RULES = [
    Fleet(prefill=1, decode=1),
    Fleet(prefill=1, decode=1, threshold=256),
    Fleet(prefill=1, decode=1, threshold=256, remote_queue_limit=1),
    Fleet(prefill=1, decode=1, threshold=256, remote_queue_limit=2),
    Fleet(prefill=1, decode=1, threshold=256, max_prefill_queue=1),
    Fleet(prefill=1, decode=1, threshold=256, max_prefill_queue=2),
    Fleet(prefill=1, decode=1, max_prefill_queue=3),  # lab-02 task 4's max_prefill_inflight=3, no threshold
    Fleet(prefill=1, decode=1, threshold=256, decode_budget=24),  # lab-02's pd-planned
    Fleet(prefill=1, decode=1, threshold=256, decode_budget=32),
    Fleet(prefill=1, decode=1, threshold=256, remote_queue_limit=1, decode_budget=24),
]
PLANNED = Fleet(prefill=1, decode=1, threshold=256, decode_budget=24)
GOAL_CUT, GOAL_TOLL = 2.5, 0.25


STEP_COSTS = ("step_ms_fixed", "per_decode_seq_ms", "per_decode_context_ms", "per_prefill_token_ms",
              "per_prefill_pair_ms", "per_prefill_token_sq_ms", "per_join_ms")  # fmt: skip


def scaled(profile, speed: float):
    """The profile on a machine whose every step takes ``speed`` times as long (client, proxy and
    handoff costs unchanged). Example: speed 2 doubles every step."""
    return dataclasses.replace(profile, **{k: getattr(profile, k) * speed for k in STEP_COSTS})


def run(fleet: Fleet, streams: Streams, seeds: int, duration: float, profile=None) -> dict[str, float]:
    profile = profile or cpu_profile()
    sims = [
        summarize(
            simulate(fleet, profile, streams=dataclasses.replace(streams, seed=s), seed=s).records(), duration
        )
        for s in range(1, seeds + 1)
    ]
    return {k: statistics.median(x[k] for x in sims) for k in ("itl_p99_ms", "ttft_p50_ms", "itl_p50_ms")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument(
        "--speeds", default="", help="comma-separated step-cost factors: the cut on other machines"
    )
    args = ap.parse_args(argv)
    manifest, _ = load_capture()
    base_streams = Streams.from_manifest(manifest["workload"])
    duration = base_streams.duration_s
    if args.speeds:
        for speed in (float(x) for x in args.speeds.split(",")):
            prof = scaled(cpu_profile(), speed)
            base = run(BASELINE, base_streams, args.seeds, duration, prof)
            cells = []
            for fleet in (RULES[1], PLANNED):
                m = run(fleet, base_streams, args.seeds, duration, prof)
                cells.append(f"{fleet.name}: x{base['itl_p99_ms'] / m['itl_p99_ms']:.2f}, "
                             f"{m['ttft_p50_ms'] / base['ttft_p50_ms'] - 1:+.0%}")  # fmt: skip
            print(f"step costs x{speed:g}: chunk64 ITL p99 {base['itl_p99_ms']:.0f} ms; " + "; ".join(cells))
        return 0
    print(f"twin, CPU profile, lab-02 signature workload; medians of {args.seeds} seeds; goal: "
          f"ITL p99 >= {GOAL_CUT}x lower than chunked colocated, short TTFT p50 toll <= +{GOAL_TOLL:.0%}")  # fmt: skip
    for scale in (1, 2, 4):
        streams = dataclasses.replace(base_streams, output_tokens=base_streams.output_tokens * scale,
                                      output_jitter=base_streams.output_jitter * scale)  # fmt: skip
        base = run(BASELINE, streams, args.seeds, duration)
        print(f"\nanswers {streams.output_tokens} +- {streams.output_jitter} tokens; {BASELINE.name}: "
              f"ITL p99 {base['itl_p99_ms']:.1f} ms, TTFT p50 {base['ttft_p50_ms']:.1f} ms")  # fmt: skip
        for fleet in RULES:
            m = run(fleet, streams, args.seeds, duration)
            cut, toll = base["itl_p99_ms"] / m["itl_p99_ms"], m["ttft_p50_ms"] / base["ttft_p50_ms"] - 1
            goal = "goal met" if cut >= GOAL_CUT and toll <= GOAL_TOLL else ""
            print(f"  {fleet.name:62s} ITL p99 {m['itl_p99_ms']:6.1f} ms (x{cut:.2f} lower)  "
                  f"TTFT p50 {m['ttft_p50_ms']:7.1f} ms ({toll:+.0%})  {goal}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

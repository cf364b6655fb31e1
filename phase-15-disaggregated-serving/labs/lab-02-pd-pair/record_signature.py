"""Measure the disaggregation signature on real vLLM servers (needs the vllm tier; not a test).

    python measure_signature.py [--duration 60] [--setups colocated,chunked,pd,pd-conditional]

Same hardware, same workload (pdpair.workload: steady decode streams + a long prompt every few
seconds), four setups:
  colocated       two plain instances (one core each), requests round-robin: prefills land in decode batches
  chunked         the same with --max-num-batched-tokens 64: each prefill spread over many steps
  pd              the P/D pair (prefill on core 0, decode on core 1) behind YOUR proxy: every request handed off
  pd-conditional  the same pair; prompts <= --local-prefill-max tokens go straight to decode (Dynamo-style rule)
It prints TTFT and ITL percentiles per setup (ITL pooled over every gap of every short stream), the
signature (YOUR task-5 `signature`) of each setup against `colocated`, and writes the raw capture to
out/signature-<time>.json. Models are compiled (no --enforce-eager) so timings are representative.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

LAB = Path(__file__).resolve().parent
sys.path[:0] = [str(LAB), str(LAB.parents[2])]  # pdpair, and labkit at the repository root

from pdpair.proxy import ProxyConfig, ProxyThread, load_impl  # noqa: E402
from pdpair.runner import (  # noqa: E402
    DEFAULT_LOG_DIR,
    prepare_spec,
    run_pair,
    served_name,
    start_all,
    stop_all,
    without_kv_transfer,
)
from pdpair.spec import load_pair_spec, with_side  # noqa: E402
from pdpair.workload import Sample, WorkloadConfig, run_workload  # noqa: E402

from labkit.machine import machine_summary  # noqa: E402

SETUPS = ("colocated", "chunked", "pd", "pd-conditional")


class ConditionalPolicy:
    """Short prompts prefill locally on decode (no toll); long ones go through the P/D handoff."""

    def __init__(self, impl, prefill_urls: list[str], decode_urls: list[str], local_max: int) -> None:
        self.pd = impl.PDProxyPolicy(prefill_urls, decode_urls)
        self.local = impl.PDProxyPolicy([], decode_urls)  # no prefill pool: decode alone
        self.local_max = local_max

    async def handle(self, ctx, path, body, request_id):
        prompt = body.get("prompt")
        short = isinstance(prompt, list) and len(prompt) <= self.local_max
        return await (self.local if short else self.pd).handle(ctx, path, body, request_id)


def summarize(impl, samples: list[Sample], duration_s: float) -> dict:
    ok = [s for s in samples if s.status == 200 and s.arrivals and s.error is None]
    short = [impl.request_timing(s.sent_at, s.arrivals) for s in ok if s.kind == "short"]
    long = [impl.request_timing(s.sent_at, s.arrivals) for s in ok if s.kind == "long"]
    gaps = [g for t in short for g in t.itl_s]
    p = impl.percentile
    ms = 1e3
    return {
        "requests": len(samples),
        "failed": len(samples) - len(ok),
        "short_tokens_per_s": sum(len(s.arrivals) for s in ok if s.kind == "short") / duration_s,
        "ttft_p50_ms": p([t.ttft_s for t in short], 50) * ms,
        "long_ttft_p50_ms": p([t.ttft_s for t in long], 50) * ms if long else None,
        "itl_p50_ms": p(gaps, 50) * ms,
        "itl_p99_ms": p(gaps, 99) * ms,
        "itl_p999_ms": p(gaps, 99.9) * ms,
        "itl_max_ms": max(gaps) * ms,
        "gaps_over_250ms_pct": 100 * sum(g > 0.25 for g in gaps) / len(gaps),
        "gaps": len(gaps),
        "_short": short,
    }


def measure(targets: list[str], model: str, cfg: WorkloadConfig, warmup: WorkloadConfig) -> list[Sample]:
    asyncio.run(run_workload(targets, model, warmup))  # compile/cache warm-up, not measured
    return asyncio.run(run_workload(targets, model, cfg))


def run_colocated_setup(name: str, impl, spec, cfg: WorkloadConfig, warmup: WorkloadConfig) -> list[Sample]:
    """`colocated` or `chunked`: both launch plans as plain instances (no connector), round-robin."""
    if name == "chunked":
        for side in ("prefill", "decode"):
            s = getattr(spec, side)
            spec = with_side(spec, side, extra_args=[*s.extra_args, "--max-num-batched-tokens", "64"])
    plans = impl.launch_plans(spec, python=sys.executable)
    plans = [without_kv_transfer(plans[s], name=f"{name}-{s}") for s in ("prefill", "decode")]
    started: list = []
    try:
        start_all(plans, DEFAULT_LOG_DIR, started=started)
        return measure([inst.url for inst in started], served_name(spec), cfg, warmup)
    finally:
        stop_all(started)


def run_pd_setups(names: list[str], impl, spec, cfg, local_max: int, warmup) -> dict[str, list[Sample]]:
    """`pd` and/or `pd-conditional` on ONE pair, each behind its own proxy."""
    results = {}
    with run_pair(impl, spec, with_proxy=False) as pair:
        pcfg = ProxyConfig(prefill_timeout_s=120.0, decode_timeout_s=120.0)
        for name in names:
            policy = (
                impl.PDProxyPolicy([pair.prefill.url], [pair.decode.url])
                if name == "pd"
                else ConditionalPolicy(impl, [pair.prefill.url], [pair.decode.url], local_max)
            )
            with ProxyThread(policy, pcfg) as proxy:
                results[name] = measure([proxy.url], pair.model, cfg, warmup)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(LAB / "pair.cpu.yaml"))
    ap.add_argument("--impl", default=None, help="solution | starter | path (default: $LAB_IMPL or solution)")
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of measured load per setup")
    ap.add_argument("--streams", type=int, default=6)
    ap.add_argument("--long-every", type=float, default=6.0)
    ap.add_argument("--long-prompt", type=int, default=1500)
    ap.add_argument("--local-prefill-max", type=int, default=256)
    args = ap.parse_args(argv)
    setups = [s for s in args.setups.split(",") if s]
    unknown = set(setups) - set(SETUPS)
    if unknown:
        ap.error(f"unknown setups {sorted(unknown)}; choose from {SETUPS}")
    impl = load_impl(args.impl)
    spec = prepare_spec(load_pair_spec(args.spec), enforce_eager=False)
    cfg = WorkloadConfig(streams=args.streams, long_every_s=args.long_every, long_prompt_tokens=args.long_prompt,
                         duration_s=args.duration)  # fmt: skip
    warmup = dataclasses.replace(cfg, duration_s=8.0, seed=cfg.seed + 1000)
    import vllm  # noqa: PLC0415 - only needed for the record

    header = f"machine: {machine_summary()}; vLLM {vllm.__version__}; workload {cfg}"
    print(header, flush=True)
    raw: dict[str, list[Sample]] = {}
    todo = [s for s in ("colocated", "chunked") if s in setups]
    pd_setups = [s for s in ("pd", "pd-conditional") if s in setups]
    for name in todo:
        t0 = time.monotonic()
        raw[name] = run_colocated_setup(name, impl, spec, cfg, warmup)
        print(f"  {name}: measured ({time.monotonic() - t0:.0f} s with start-up)", flush=True)
    if pd_setups:
        t0 = time.monotonic()
        raw.update(run_pd_setups(pd_setups, impl, spec, cfg, args.local_prefill_max, warmup))
        print(f"  {', '.join(pd_setups)}: measured ({time.monotonic() - t0:.0f} s with start-up)", flush=True)
    stats = {name: summarize(impl, samples, cfg.duration_s) for name, samples in raw.items()}

    cols = ["ttft_p50_ms", "long_ttft_p50_ms", "itl_p50_ms", "itl_p99_ms", "itl_p999_ms", "itl_max_ms",
            "gaps_over_250ms_pct", "short_tokens_per_s", "failed"]  # fmt: skip
    print("\n| setup | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for name in [s for s in SETUPS if s in stats]:
        row = [stats[name][c] for c in cols]
        print(f"| {name} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in row) + " |")
    if "colocated" in stats:
        for name in [s for s in SETUPS if s in stats and s != "colocated"]:
            sig = impl.signature(stats["colocated"]["_short"], stats[name]["_short"])
            print(
                f"signature colocated -> {name}: TTFT p50 {sig.ttft_change_pct:+.0f}%, "
                f"ITL p50 x{sig.itl_p50_ratio:.2f}, ITL p99 x{sig.itl_p99_ratio:.2f} "
                f"({sig.itl_p99_before_s * 1e3:.0f} -> {sig.itl_p99_after_s * 1e3:.0f} ms), "
                f"ITL mean {sig.itl_mean_before_s * 1e3:.1f} -> {sig.itl_mean_after_s * 1e3:.1f} ms"
            )
    out = LAB / "out" / f"signature-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "header": header, "python": platform.python_version(),
        "stats": {k: {kk: vv for kk, vv in v.items() if kk != "_short"} for k, v in stats.items()},
        "samples": {k: [dataclasses.asdict(s) for s in v] for k, v in raw.items()},
    }))  # fmt: skip
    print(f"raw capture: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

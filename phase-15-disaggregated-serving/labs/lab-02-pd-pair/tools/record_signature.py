"""Record the disaggregation signature on real vLLM servers, ON THIS MACHINE: calibrate, predict, record, compare.

    python record_signature.py                          # -> out/signature (all setups, 2 runs of 120 s)
    python record_signature.py --duration 10 --runs 1 --out out/smoke       # a quick look
    python record_signature.py --setups colocated-chunk64,pd-conditional --runs 1   # the cut alone
    python record_signature.py --replace-graded --out captures/cpu-2core   # replace the graded capture
    python record_signature.py --profile out/calibration   # skip the calibration run, use that profile
    python record_signature.py --device cuda --model /models/Llama-3.1-8B-Instruct --weights as_is \\
        --no-calibrate --out out/my-2gpu                  # one GPU per instance: GPU 0 and GPU 1

What it does, in order (``docs/signature-on-your-machine.md`` walks through it):

1. calibrates lab-03's twin ON THIS MACHINE (``tools/calibrate_profile.py --live``: one fresh pair, about
   a minute of requests whose engine steps have known compositions; the fitted profile is written to
   ``<out>/calibration/``). The cut a recording shows is a property of the CPU (how a prefill step
   compares with a decode step), so the prediction must come from the machine that records;
2. prints the twin's prediction for every setup it is about to record (TTFT p50, ITL p50 and p99) and
   the ITL p99 cut of ``pd-conditional`` against ``colocated-chunk64``;
3. records every setup and run: fresh servers, the same hardware budget (two CPU cores, or two GPUs)
   and the same workload (``pdpair.load.workload``: closed-loop decode streams plus a long prompt every
   few seconds; the prompts of run N are the same for every setup and differ between runs, so no prefix
   cache helps), sent through the lab's proxy with YOUR ``PDProxyPolicy``;
4. ends with predicted vs measured per setup and metric, the error, and whether the measured cut lies
   within the twin's band (``fleetsim.predict.CUT_BAND``); then YOUR task-5 ``signature`` of each P/D
   setup against each colocated one.

The machine must be quiet (``labkit.machine.LoadWatch``: the 1-minute load < 1.0 at the start, within
what a pair and its client explain around every run, no other process's threads runnable beside it);
the manifest's ``quiet`` block records the load before and after every run and the verdict. A capture
goes to ``out/signature`` unless ``--out`` says otherwise; replacing a graded capture (a folder under
the lab's ``captures/``) takes ``--replace-graded``, and then a noisy recording is refused (it stays in
``out/`` and the graded folder is left exactly as it was).

  colocated          two single-core instances, no connector; the proxy round-robins requests over them
  colocated-chunk64  the same with --max-num-batched-tokens 64: each prefill spread over many decode steps
  pd-all             prefill instance (core 0) + decode instance (core 1), NIXL; every request handed off
  pd-conditional     the same pair; prompts of <= --local-prefill-max tokens prefilled on decode itself
  pd-planned         pd-conditional with decode's step budget cut to --planned-decode-budget tokens
                     (--max-num-batched-tokens): a local prefill is spread over two decode steps, the
                     plan lab-03's twin (twin_rules.py) found for the lab's ITL p99 / TTFT goal

Models run compiled (no --enforce-eager). Time on a quiet 2-core machine: the calibration ~80 s
(a ~50 s start-up and ~30 s of requests), then per setup and run a start-up (35-47 s for the graded
capture, 68-94 s on the Intel day of its planned-3/) + 8 s warm-up + the load + drain: all five setups,
2 runs of 120 s: ~30 min (the graded capture's recorder: 1826 s); start-ups take several times longer
on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

from labkit.machine import LoadWatch, cpu_info, package_versions
from pdpair.evidence.capture import (
    MANIFEST,
    RequestRecord,
    capture_file,
    load_capture,
    read_records,
    summarize,
    write_records,
)
from pdpair.load.client import metric_sum
from pdpair.load.workload import Sample, WorkloadConfig, run_workload
from pdpair.pair.procs import STARTUP_TIMEOUT_S
from pdpair.pair.runner import (
    DEFAULT_LOG_DIR,
    get_text,
    on_cuda,
    prepare_spec,
    served_name,
    start_all,
    stop_all,
    without_kv_transfer,
)
from pdpair.pair.spec import load_pair_spec, with_side
from pdpair.proxy import ProxyConfig, ProxyThread, load_impl

LAB = Path(__file__).resolve().parents[1]  # the lab folder
GRADED = LAB / "captures"  # captures the tests read: replacing one takes --replace-graded
DEFAULT_OUT = LAB / "out" / "signature"
CALIBRATION = "calibration"  # the capture's own calibration: <capture>/calibration/profile.json

SETUPS = {
    "colocated": "2 single-core instances, no connector, proxy round-robin; default chunk budget",
    "colocated-chunk64": "2 single-core instances, no connector, proxy round-robin; --max-num-batched-tokens 64",
    "pd-all": "prefill instance + decode instance (NIXL), every request handed off",
    "pd-conditional": "prefill instance + decode instance (NIXL), prompts <= {local_max} tokens prefilled on decode",
    "pd-planned": "prefill instance + decode instance (NIXL), prompts <= {local_max} tokens prefilled on decode, "
    "decode --max-num-batched-tokens {decode_budget}",
}
LOCAL_PREFILL = ("pd-conditional", "pd-planned")
WARMUP_S = 8.0
NIXL_METRICS = ("vllm:nixl_xfer_time_seconds_count", "vllm:nixl_xfer_time_seconds_sum",
                "vllm:nixl_bytes_transferred_sum")  # fmt: skip


def setup_spec(spec, setup: str, decode_budget: int = 24):
    """This setup's change to the prepared spec: the chunk budget of colocated-chunk64 (both instances),
    pd-planned's budget of the decode instance (``decode_budget`` tokens per step)."""
    budgets = {"colocated-chunk64": {"prefill": 64, "decode": 64}, "pd-planned": {"decode": decode_budget}}
    for side, budget in budgets.get(setup, {}).items():
        extra = [*getattr(spec, side).extra_args, "--max-num-batched-tokens", str(budget)]
        spec = with_side(spec, side, extra_args=extra)
    return spec


async def _measure(urls: list[str], model: str, cfg: WorkloadConfig, label: str) -> list[Sample]:
    """The measured load, with a progress bar of seconds elapsed and requests finished."""
    from tqdm import tqdm  # noqa: PLC0415 - comes with the vllm tier, like everything this script runs

    samples: list[Sample] = []
    work = asyncio.ensure_future(run_workload(urls, model, cfg, samples))
    t0 = time.monotonic()
    with tqdm(total=round(cfg.duration_s), desc=label, unit="s", leave=True, dynamic_ncols=True) as bar:
        while not work.done():
            await asyncio.wait([work], timeout=1.0)
            bar.n = min(round(time.monotonic() - t0), bar.total)
            bar.set_postfix(
                requests=len(samples), failed=sum(s.status != 200 or s.error is not None for s in samples)
            )
    return work.result()


def record_one(impl, spec, setup: str, cfg: WorkloadConfig, local_max: int, log_dir: Path,
               startup_timeout_s: float = STARTUP_TIMEOUT_S) -> dict:  # fmt: skip
    """Fresh servers for one setup and run: warm-up, the measured load, NIXL counters; always stopped."""
    plans = impl.launch_plans(spec, python=sys.executable)
    if setup.startswith("colocated"):
        plans = [
            without_kv_transfer(plans[s], name=f"{setup}-{i}") for i, s in enumerate(("prefill", "decode"))
        ]
        labels = {p.url: f"instance-{i}" for i, p in enumerate(plans)}
        policy = impl.PDProxyPolicy([], [p.url for p in plans])  # no prefill pool: a round-robin router
    else:
        plans = [plans["prefill"], plans["decode"]]
        labels = {plans[0].url: "prefill", plans[1].url: "decode"}
        policy = impl.PDProxyPolicy([plans[0].url], [plans[1].url],
                                    local_prefill_max_tokens=local_max if setup in LOCAL_PREFILL else 0)  # fmt: skip
    started: list = []
    try:
        start_all(plans, log_dir, started=started, timeout_s=startup_timeout_s)
        pcfg = ProxyConfig(prefill_timeout_s=cfg.request_timeout_s, decode_timeout_s=cfg.request_timeout_s)
        with ProxyThread(policy, pcfg) as proxy:
            warm = dataclasses.replace(cfg, duration_s=WARMUP_S, seed=cfg.seed + 1000)
            # the warm-up fills compile caches; it is not measured
            asyncio.run(run_workload([proxy.url], served_name(spec), warm))
            before = _nixl(plans)
            t0 = time.monotonic()
            samples = asyncio.run(_measure([proxy.url], served_name(spec), cfg, f"{setup} seed {cfg.seed}"))
            after = _nixl(plans)  # leaving the proxy re-raises any exception YOUR policy raised
    finally:
        stop_all(started)
    records = [
        RequestRecord(
            kind=s.kind,
            instance=labels.get(s.upstream, s.upstream or "?"),
            mode=s.mode,
            status=s.status,
            sent_s=s.sent_at - t0,
            arrivals_s=[a - t0 for a in s.arrivals],
            prefill_ms=s.prefill_ms,
            error=s.error,
        )  # fmt: skip
        for s in sorted(samples, key=lambda s: s.sent_at)
    ]
    nixl = {k.removeprefix("vllm:"): after[k] - before[k] for k in NIXL_METRICS}
    return {
        "records": records,
        "startup_s": {inst.name: round(inst.startup_s or -1, 1) for inst in started},
        "instances": [
            {
                "label": labels[p.url],
                "argv": shlex.join(p.argv[1:]),
                "cores": p.env.get("VLLM_CPU_OMP_THREADS_BIND"),
                "cuda_devices": p.env.get("CUDA_VISIBLE_DEVICES"),
            }
            for p in plans
        ],  # fmt: skip
        "nixl": nixl if not setup.startswith("colocated") else None,
    }


def _nixl(plans) -> dict[str, float]:
    """Decode's NIXL counters (0 on a colocated instance: it has no connector)."""
    text = get_text(plans[-1].url + "/metrics")
    return {k: metric_sum(text, k) for k in NIXL_METRICS}


def is_graded(path: Path) -> bool:
    """True for a folder under the lab's captures/ (what the tests read)."""
    return Path(path).resolve().is_relative_to(GRADED.resolve())


def workload_manifest(base: WorkloadConfig, setups: list[str], runs: list[int], local_max: int,
                      decode_budget: int) -> dict:  # fmt: skip
    """What the twin needs of a capture's manifest, known before recording."""
    return {
        "workload": {**dataclasses.asdict(base), "seed": "= run number", "warmup_s": WARMUP_S},
        "setups": {s: SETUPS[s].format(local_max=local_max, decode_budget=decode_budget) for s in setups},
        "local_prefill_max_tokens": local_max,
        "planned_decode_budget": decode_budget,
        "runs": runs,
    }


def replace_graded(stage: Path, out: Path) -> None:
    """Move a finished capture from ``stage`` into the graded folder ``out``: its runs, manifest and
    calibration replace the old ones; everything else there (the annotation, plots, planned*/) stays."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.jsonl"), out / MANIFEST]:
        old.unlink(missing_ok=True)
    shutil.rmtree(out / CALIBRATION, ignore_errors=True)
    for f in stage.iterdir():
        shutil.move(str(f), str(out / f.name))
    stage.rmdir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(LAB / "pair.cpu.yaml"))
    ap.add_argument(
        "--model", default=str(LAB / "models" / "llama-200m"), help="a model folder for both sides"
    )
    ap.add_argument("--weights", default="dummy", choices=("dummy", "random", "as_is"),
                    help="dummy: vLLM's (timings do not depend on weight values); as_is: real weights")  # fmt: skip
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--impl", default=None, help="solution | starter | path (default: $LAB_IMPL or solution)")
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument(
        "--duration", type=float, default=120.0, help="seconds of measured load per setup and run"
    )
    ap.add_argument("--streams", type=int, default=6)
    ap.add_argument("--long-every", type=float, default=6.0)
    ap.add_argument("--long-prompt", type=int, default=1500)
    ap.add_argument("--local-prefill-max", type=int, default=256)
    ap.add_argument("--planned-decode-budget", type=int, default=24,
                    help="pd-planned: decode's --max-num-batched-tokens (lab-03's twin_rules.py picks it)")  # fmt: skip
    ap.add_argument("--startup-timeout", type=float, default=STARTUP_TIMEOUT_S,
                    help="seconds a fresh pair may take to become healthy (compiling is slow on a busy machine)")  # fmt: skip
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="capture folder (its old runs are replaced)")
    ap.add_argument("--replace-graded", action="store_true",
                    help="allow --out to be a graded capture under captures/ (refused if the machine was not quiet)")  # fmt: skip
    ap.add_argument("--profile", default=None, help="a calibrated profile (folder or profile.json): skip the calibration run")  # fmt: skip
    ap.add_argument(
        "--no-calibrate", action="store_true", help="no calibration and no prediction (e.g. on GPUs)"
    )
    ap.add_argument("--twin-seeds", type=int, default=8, help="seeds of the twin's prediction (median)")
    args = ap.parse_args(argv)
    setups = [s for s in args.setups.split(",") if s]
    if unknown := set(setups) - set(SETUPS):
        ap.error(f"unknown setups {sorted(unknown)}; choose from {list(SETUPS)}")
    out = Path(args.out)
    graded = is_graded(out)
    if graded and not args.replace_graded:
        ap.error(f"{out} is a graded capture (under {GRADED}); pass --replace-graded to replace it "
                 f"(only a quiet recording replaces it), or record elsewhere (default {DEFAULT_OUT})")  # fmt: skip
    watch = LoadWatch()  # the load at the start, before anything of ours runs
    info = cpu_info()
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs, bf16 matmul: {info['bf16_matmul']} "
          f"(flags: {' '.join(info['bf16_flags']) or 'none'}); 1-minute load {watch.start_load[0]} at the start")  # fmt: skip
    impl = load_impl(args.impl)
    spec = load_pair_spec(args.spec)
    if args.device == "cuda":  # before prepare_spec, so it adds no CPU pinning and no CPU NIXL fix
        spec = on_cuda(spec, devices=("0", "1"))  # one GPU per instance, as one core per instance on CPU
    spec = prepare_spec(spec, enforce_eager=False, model=args.model, weights=args.weights)
    base = WorkloadConfig(streams=args.streams, long_every_s=args.long_every, long_prompt_tokens=args.long_prompt,
                          duration_s=args.duration)  # fmt: skip
    stage = LAB / "out" / f"staging-{out.name}" if graded else out
    stage.mkdir(parents=True, exist_ok=True)
    for old in [*stage.glob("*.jsonl"), stage / MANIFEST]:  # a manifest says "complete": it is written last
        old.unlink(missing_ok=True)
    shutil.rmtree(stage / CALIBRATION, ignore_errors=True)
    runs = list(range(1, args.runs + 1))
    started_wall = time.monotonic()
    plan = workload_manifest(base, setups, runs, args.local_prefill_max, args.planned_decode_budget)

    # 1-2. calibrate on this machine, predict what is about to be recorded
    profile = predicted = None
    if not args.no_calibrate:
        from calibrate_profile import calibrate_live, print_profile, write_calibration  # noqa: PLC0415 - a sibling tool

        from fleetsim.predict import predict_all, print_comparison  # noqa: PLC0415 - lab-03's twin
        from fleetsim.profile import load_profile  # noqa: PLC0415

        raw = None
        if args.profile:
            profile = load_profile(args.profile)
            src = Path(args.profile)
            cal_info = {"from": str(src), "manifest": json.loads((src / MANIFEST).read_text())
                        if src.is_dir() and (src / MANIFEST).is_file() else None}  # fmt: skip
            if src.is_dir() and (src / "arrivals.json").is_file():
                raw = json.loads((src / "arrivals.json").read_text())
        else:
            with watch.run("calibration") as load_row:
                profile, cal_info, raw = calibrate_live(impl, spec, DEFAULT_LOG_DIR, args.startup_timeout)
            cal_info["load"] = load_row
        write_calibration(stage / CALIBRATION, profile, cal_info, raw)
        print(f"\nthe twin's profile for this machine ({stage / CALIBRATION}):")
        print_profile(profile, cal_info)
        predicted = predict_all(plan, profile, args.twin_seeds)
        print(f"\nthe twin predicts (median of {args.twin_seeds} seeds, {args.duration:g} s per run):")
        print_comparison(predicted)
        print(flush=True)

    # 3. record
    results: dict[str, dict] = {s: {} for s in setups}
    for run in runs:
        cfg = dataclasses.replace(base, seed=run)  # the same prompts for every setup of this run
        for setup in setups:
            t = time.monotonic()
            with watch.run(f"{setup} run {run}") as load_row:
                rec = record_one(impl, setup_spec(spec, setup, args.planned_decode_budget), setup, cfg,
                                 args.local_prefill_max, DEFAULT_LOG_DIR, args.startup_timeout)  # fmt: skip
            rec["loadavg_1_5_15"] = {"before": load_row["loadavg_before"], "after": load_row["loadavg_after"]}
            rec["load"] = {k: v for k, v in load_row.items() if k != "label"}
            write_records(capture_file(stage, setup, run), rec.pop("records"))
            stats = summarize(read_records(capture_file(stage, setup, run)), cfg.duration_s)
            results[setup][str(run)] = {**stats, **rec, "wall_s": round(time.monotonic() - t, 1)}
            print(f"  {setup} run {run}: ITL p50 {stats['itl_p50_ms']} p99 {stats['itl_p99_ms']} "
                  f"p99.9 {stats['itl_p999_ms']} max {stats['itl_max_ms']} ms, TTFT p50 {stats['ttft_p50_ms']} ms, "
                  f"{stats['failed']} failed ({time.monotonic() - t:.0f} s; load {load_row['verdict']})", flush=True)  # fmt: skip
    watch.close()
    model_cfg = json.loads((Path(args.model) / "config.json").read_text())
    manifest = {
        "capture_version": 1,
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "recorder_wall_s": round(time.monotonic() - started_wall, 1),
        "machine": {
            "cpu": info["cpu"],
            "cpus": os.cpu_count(),
            "bf16_flags": info["bf16_flags"],
            "bf16_matmul": info["bf16_matmul"],
            "cores_used": sorted(os.sched_getaffinity(0)),
            "os": f"{platform.system()} {platform.release()}",
            "device": args.device,
        },  # fmt: skip
        "versions": package_versions(),
        "model": {
            "folder": Path(args.model).name,
            "config": model_cfg,
            "weights": args.weights,
            "dtype": spec.decode.dtype,
            "block_size": spec.decode.block_size,
            "compiled": True,
        },  # fmt: skip
        "hardware_budget": (
            "every setup: two instances, one core (or GPU) each, whole instances pinned (every thread re-pinned "
            "after start-up); client and proxy are unpinned processes on the same machine"
        ),
        **plan,
        "quiet": watch.verdict(),
        "results": results,
    }
    manifest["runs"] = runs
    if predicted is not None:
        from fleetsim.predict import CUT_BAND, cut, measured_all, within_band  # noqa: PLC0415

        _, recorded = load_capture_parts(stage, manifest)
        measured = measured_all(manifest, recorded)
        pc, mc = cut(predicted), cut(measured)
        manifest["twin"] = {
            "profile": f"{CALIBRATION}/profile.json",
            "seeds": args.twin_seeds,
            "predicted": {s: {k: round(v, 1) for k, v in row.items()} for s, row in predicted.items()},
            "cut": None
            if pc is None
            else {
                "predicted": round(pc, 3),
                "measured": round(mc, 3),
                "band": CUT_BAND,
                "within_band": within_band(mc, pc),
            },  # fmt: skip
        }
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"\ncapture: {stage} ({time.monotonic() - started_wall:.0f} s in all); the machine was "
          f"{manifest['quiet']['verdict']}" + "".join(f"\n  {r}" for r in manifest["quiet"]["reasons"]))  # fmt: skip
    report(impl, stage, predicted)
    if graded:
        if manifest["quiet"]["verdict"] != "quiet":
            print(f"\nREFUSED: {out} is graded and this recording was not made on a quiet machine; it stays in "
                  f"{stage} and {out} is unchanged")  # fmt: skip
            return 3
        replace_graded(stage, out)
        print(f"\n{out}: replaced by this recording")
    return 0


def load_capture_parts(directory: Path, manifest: dict):
    """The records of a capture whose manifest is not written yet (``load_capture`` reads it from disk)."""
    return manifest, {(s, r): read_records(capture_file(directory, s, r)) for s in manifest["setups"]
                      for r in manifest["runs"]}  # fmt: skip


def report(impl, directory: Path, predicted: dict | None = None) -> None:
    """Each run's figures, predicted vs measured, and YOUR signature() of each P/D setup against each
    colocated one."""
    from plot_signature import print_signatures, print_table  # noqa: PLC0415 - the lab's reader of captures

    manifest, runs = load_capture(directory)
    print_table(manifest)
    if predicted is not None:
        from fleetsim.predict import measured_all, print_comparison  # noqa: PLC0415 - lab-03's twin

        print(
            "\npredicted (the twin, calibrated on this machine before recording) vs measured (mean of the runs):"
        )
        print_comparison(predicted, measured_all(manifest, runs))
    print()
    print_signatures(impl, manifest, runs)


if __name__ == "__main__":
    raise SystemExit(main())

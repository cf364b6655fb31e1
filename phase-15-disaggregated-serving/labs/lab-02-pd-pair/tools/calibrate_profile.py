"""Calibrate the serving twin's CPU step-time profile (lab-03's fleetsim): on this machine, or from a capture.

    python calibrate_profile.py --live --out out/calibration   # ON THIS MACHINE: a short calibration run
    python calibrate_profile.py                    # captures/cpu-2core -> lab-03 profiles/cpu-llama-200m/
    python calibrate_profile.py --capture DIR --out DIR
    python calibrate_profile.py --joins [--capture DIR]   # what a request joining decode costs, measured

``--live`` (what ``make record`` runs first): one fresh P/D pair, about a minute of requests whose
steps have known compositions (``pdpair/evidence/calibration.py``), and every cost fitted at once by
``fleetsim.fit`` (least squares on relative errors, every cost >= 0). It writes ``profile.json`` and
``manifest.json`` (the CPU, its bf16 flags, the load, each group of observations with its fit error)
to ``--out``. The rest of this docstring is the capture-based calibration that made the shipped
profile (fitted from the graded capture, `captures/cpu-2core`).

The profile says how long one vLLM step of ``models/llama-200m`` takes on one pinned core:
step_ms = fixed + per decode sequence x decode batch + per prompt token x prefill tokens + per attention
pair x prefill (query, key) pairs, plus two costs outside the engine: the client/proxy overhead a request
pays before its first token, and the P/D pair's KV handoff latency. Every term is read off the
recorded capture by an estimator named here - nothing is set by hand - and only from RUN 1 of the
setups named below, so run 2 and the other statistics of run 1 stay a check (lab-03's twin tests):

1. fixed + per decode sequence: ``pd-all`` run 1, decode instance (it never prefills a prompt): each step
   is a cluster of token arrivals; the median step time per batch size, least squares over batch sizes.
   The same steps give the step-to-step jitter (lognormal sigma from their interquartile range) and the
   cost of a request joining the batch (median excess of steps that streamed a first token).
2. per prompt token + per attention pair: ``colocated-chunk64`` run 1: each long prompt's prefill is
   cut into chunks of (64 - decode batch) tokens riding decode steps; walking back from the step that
   streamed its first token gives every chunk's size and start, and least squares on (step time minus
   the decode part) gives both costs.
3. request overhead: ``colocated`` run 1's short-prompt TTFT p50 minus the twin's with no overhead.
4. KV handoff latency: ``pd-all`` run 1's median (TTFT - prefill hop) of short prompts minus the twin's
   with no latency (this is the decode hop, NIXL's pull and the relay together, on one host).

``--joins`` measures the join step (the step in which a new request joins the running decode batch)
instead of fitting: on every instance that streams answers, each step is classified by what joined in it
(nothing; a handed-off request, whose KV was pulled and whose last prompt token decode computes; a
locally prefilled short prompt, whose whole prefill rides the step) and the median step time of each
class is printed beside the profile's prediction for the same step.

Why from a capture as well as ``--live``: a capture fit needs neither vLLM nor a quiet machine when it
runs (on a shared machine a step-time sweep measures the neighbours). The step times are the
recording's, and so is the verdict on the load they ran under: the capture's ``quiet`` block is copied
into the profile's manifest (the shipped profile's capture, ``captures/cpu-2core``, is quiet in every
run). The load average at calibration time is recorded too. Model and workload come from the capture's
manifest.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from fleetsim.fit import fit, jitter_sigma, nnls
from fleetsim.fleet import Fleet, simulate
from fleetsim.profile import LinearProfile, chunk_pairs
from fleetsim.workload import Streams
from labkit.machine import cpu_info, loadavg
from pdpair.evidence.capture import CAPTURE_DIR, load_capture, percentile

LAB = Path(__file__).resolve().parents[1]  # the lab folder
LAB03 = LAB.parent / "lab-03-disagg-economics"

OUT_DIR = LAB03 / "profiles" / "cpu-llama-200m"
STEP_CLUSTER_S = 0.005  # token arrivals closer than this on one instance came from the same step
MIN_SAMPLES = 30  # a batch size needs this many steps to enter the decode fit


def steps_of(records, instance: str) -> list[tuple[float, float, int, int]]:
    """The instance's steps as (start_s, end_s, decodes, first tokens): each step's end is a cluster of
    token arrivals; a request whose first token is in it prefilled there, the rest decoded."""
    tokens = sorted(
        (t, i == 0) for r in records if r.ok and r.instance == instance for i, t in enumerate(r.arrivals_s)
    )
    ends: list[list] = []  # [end_s, decodes, firsts]
    for t, first in tokens:
        if not ends or t - ends[-1][0] > STEP_CLUSTER_S:
            ends.append([t, 0, 0])
        ends[-1][2 if first else 1] += 1
    return [(a[0], b[0], b[1], b[2]) for a, b in zip(ends, ends[1:], strict=False)]


def join_classes(records, instance: str) -> dict[str, list[float]]:
    """The instance's step times (ms) grouped by who joined in the step: "none", "handed-off" (only
    handed-off requests' first tokens), "local" (exactly one locally prefilled or colocated short
    prompt's first token, nothing else joining), "other" (anything else: several, or a long prompt)."""
    tokens = sorted(
        (t, (r.kind, r.mode) if i == 0 else None)
        for r in records
        if r.ok and r.instance == instance
        for i, t in enumerate(r.arrivals_s)
    )  # fmt: skip
    ends: list[list] = []  # [end_s, joined]
    for t, joined in tokens:
        if not ends or t - ends[-1][0] > STEP_CLUSTER_S:
            ends.append([t, []])
        if joined:
            ends[-1][1].append(joined)
    out: dict[str, list[float]] = {"none": [], "handed-off": [], "local": [], "other": []}
    for a, b in zip(ends, ends[1:], strict=False):
        joined = b[1]
        if not joined:
            key = "none"
        elif all(k == "short" and m == "disaggregated" for k, m in joined):
            key = "handed-off"
        elif len(joined) == 1 and joined[0][0] == "short":
            key = "local"
        else:
            key = "other"
        out[key].append((b[0] - a[0]) * 1e3)
    return out


def report_joins(capture: Path, profile_path: Path) -> None:
    """Print the measured join steps of every decoding instance of every setup and run, and the profile's."""
    from fleetsim.profile import load_profile  # noqa: PLC0415

    manifest, runs = load_capture(capture)
    short = manifest["workload"]["short_prompt_tokens"]
    prof = load_profile(profile_path)
    streams = manifest["workload"]["streams"]
    print(f"join steps in {capture} (median ms, steps; a step = a cluster of token arrivals)")
    print(f"  profile {prof.name}, {streams - 1} decodes: plain step {prof.step_ms(0, 0, streams - 1, 0):.1f}, "
          f"handed-off join {prof.step_ms(1, chunk_pairs(short - 1, 1), streams - 1, 0, 1):.1f}, "
          f"local {short}-token prefill + join {prof.step_ms(short, chunk_pairs(0, short), streams - 1, 0, 1):.1f}")  # fmt: skip
    for (setup, run), records in sorted(runs.items()):
        for inst in sorted({r.instance for r in records if r.ok} - {"prefill"}):
            classes = join_classes(records, inst)
            total = sum(len(v) for v in classes.values())
            cells = [
                f"{k} {percentile(v, 50):6.1f} ({len(v)}, {100 * len(v) / total:.1f}%)"
                for k, v in classes.items()
                if v
            ]
            print(f"  {setup:18s} run {run} {inst:10s} " + "  ".join(cells))


def lstsq(rows: list[list[float]], ys: list[float]) -> list[float]:
    """Least squares with every coefficient >= 0 (each is a physical cost: see fleetsim.fit)."""
    a, b = np.asarray(rows, float), np.asarray(ys, float)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-30)
    return [float(x) for x in nnls(a / scale, b) / scale]


def fit_decode(records, instance: str = "decode") -> tuple[float, float, float, float, dict]:
    by_batch: dict[int, list[float]] = {}
    joining: list[tuple[int, float]] = []
    for a, b, decodes, firsts in steps_of(records, instance):
        if firsts == 0 and decodes > 0:
            by_batch.setdefault(decodes, []).append((b - a) * 1e3)
        elif firsts == 1:
            joining.append((decodes, (b - a) * 1e3))
    used = {k: v for k, v in sorted(by_batch.items()) if len(v) >= MIN_SAMPLES}
    q1, _, q3 = statistics.quantiles([math.log(x) for v in used.values() for x in v], n=4)
    sigma = (q3 - q1) / 1.349  # the interquartile range of a normal is 1.349 sigma: robust to stalls
    # at batches of 1-6 a decode step streams the weights once whatever the batch (memory-bound), so the
    # slope is ~0 and noise can make it negative, which is not physical: then the step is flat (its median)
    sol = np.linalg.lstsq(np.asarray([[1.0, k] for k in used]), np.asarray([statistics.median(v) for v in used.values()]),
                          rcond=None)[0]  # fmt: skip
    fixed, per_seq = float(sol[0]), float(sol[1])
    if per_seq < 0:
        fixed, per_seq = statistics.median([x for v in used.values() for x in v]), 0.0
    join = statistics.median([ms - fixed - per_seq * d for d, ms in joining])
    return (
        fixed,
        per_seq,
        join,
        sigma,
        {
            "join_steps": len(joining),
            "median_step_ms_by_batch": {k: round(statistics.median(v), 2) for k, v in used.items()},
            "steps_by_batch": {k: len(v) for k, v in used.items()},
        },
    )


def one_shot_rows(records, fixed: float, per_seq: float, join: float) -> tuple[list, list]:
    """Rows for the prefill fit from whole-prompt steps: the step that streamed a long prompt's first
    token with the default budget carried the whole prompt (and the other requests' decodes)."""
    rows, ys = [], []
    for L in (r for r in records if r.ok and r.kind == "long"):
        for a, b, decodes, firsts in steps_of(records, L.instance):
            if abs(b - L.arrivals_s[0]) <= STEP_CLUSTER_S and firsts == 1:
                n = L.prompt_len
                rows.append([n, chunk_pairs(0, n), n * n])
                ys.append((b - a) * 1e3 - fixed - per_seq * decodes - join)
    return rows, ys


def fit_prefill(chunked, whole, fixed: float, per_seq: float, join: float, budget: int = 64):
    rows, ys = one_shot_rows(whole, fixed, per_seq, join)
    n_whole = len(rows)
    longs = [r for r in chunked if r.ok and r.kind == "long"]
    records = chunked
    for L in longs:
        steps = [
            s for s in steps_of(records, L.instance) if L.sent_s < s[1] <= L.arrivals_s[0] + STEP_CLUSTER_S
        ]
        if not steps or abs(steps[-1][1] - L.arrivals_s[0]) > STEP_CLUSTER_S:
            continue
        # walk back from the step that streamed L's first token; chunk = what the budget left
        chunks, seen = [], 0
        last = steps[-1]
        for a, b, decodes, firsts in reversed(steps[:-1]):
            c = budget - decodes - 32 * firsts  # firsts: short prompts (32 tokens) prefilled alongside
            if c <= 0 or seen + c >= L.prompt_len:
                break
            chunks.append((a, b, decodes, firsts, c))
            seen += c
        left = budget - last[2] - 32 * (last[3] - 1)
        c_last = L.prompt_len - seen
        if not 0 < c_last <= left:
            continue  # the walk-back does not add up: another prefill shared these steps
        chunks.reverse()
        chunks.append((last[0], last[1], last[2], last[3] - 1, c_last))
        start = 0
        for a, b, decodes, firsts, c in chunks:
            if firsts == 0:  # steps that also carried a short prompt's prefill are left out of the fit
                rows.append([c, chunk_pairs(start, c), c * c])
                done = start + c == L.prompt_len
                ys.append((b - a) * 1e3 - fixed - per_seq * decodes - (join if done else 0.0))
            start += c
    per_token, per_pair, per_sq = lstsq(rows, ys)
    return (
        per_token,
        per_pair,
        per_sq,
        {"chunk_steps_used": len(rows) - n_whole, "whole_prompt_steps_used": n_whole},
    )


def twin(profile: LinearProfile, fleet: Fleet, manifest: dict, run: int):
    return simulate(
        fleet, profile, streams=Streams.from_manifest(manifest["workload"], seed=run), seed=run
    ).records()


def calibrate(capture: Path) -> tuple[LinearProfile, dict]:
    manifest, runs = load_capture(capture)
    long_len = manifest["workload"]["long_prompt_tokens"]
    for recs in runs.values():
        for r in recs:
            r.prompt_len = long_len if r.kind == "long" else manifest["workload"]["short_prompt_tokens"]
    fixed, per_seq, join_raw, sigma, d_info = fit_decode(runs[("pd-all", 1)])
    per_token, per_pair, per_sq, c_info = fit_prefill(runs[("colocated-chunk64", 1)], runs[("colocated", 1)],
                                                      fixed, per_seq, join_raw)  # fmt: skip
    # a handed-off request's join step also computed its prompt's last token: take that out of the join
    short = manifest["workload"]["short_prompt_tokens"]
    # >= 0: a join cannot make a step faster; below 0 it costs less than the noise of the terms taken out
    join_fit = join_raw - per_token - per_pair * chunk_pairs(short - 1, 1) - per_sq
    join = max(0.0, join_fit)
    m = manifest["model"]["config"]
    kv = 2 * m["num_hidden_layers"] * m["num_key_value_heads"] * m["head_dim"] * 2
    base = LinearProfile("cpu-llama-200m", fixed, per_seq, 0.0, per_token, per_pair, per_sq, join, sigma,
                         kv_bytes_per_token=kv, block_size=manifest["model"]["block_size"])  # fmt: skip
    profile = base
    overhead = latency = 0.0

    def short_ttft(recs) -> float:
        return percentile([r.arrivals_s[0] - r.sent_s for r in recs if r.ok and r.kind == "short"], 50)

    def after(recs) -> float:  # TTFT minus the prefill hop, of handed-off short prompts
        return percentile([r.arrivals_s[0] - r.sent_s - r.prefill_ms / 1e3 for r in recs
                     if r.ok and r.kind == "short" and r.prefill_ms is not None], 50)  # fmt: skip

    for _ in range(3):  # the closed loop couples the two terms weakly: a few rounds settle them
        sim = twin(profile, Fleet(colocated=2), manifest, 1)
        # >= 0: a negative overhead would mean the step terms over-predict the short prompts' TTFT (the
        # per-token cost extrapolated from 61-token chunks to a 32-token prompt); --live measures both
        overhead = max(0.0, overhead + (short_ttft(runs[("colocated", 1)]) - short_ttft(sim)) * 1e3)
        profile = LinearProfile(
            **{**base.__dict__, "request_overhead_ms": overhead, "link_latency_ms": latency}
        )
        sim = twin(profile, Fleet(prefill=1, decode=1), manifest, 1)
        latency = max(0.0, latency + (after(runs[("pd-all", 1)]) - after(sim)) * 1e3)
        profile = LinearProfile(
            **{**base.__dict__, "request_overhead_ms": overhead, "link_latency_ms": latency}
        )
    rounded = {k: (round(v, 7) if isinstance(v, float) else v) for k, v in profile.__dict__.items()}
    rounded["source"] = {
        "capture": str(
            capture.relative_to(LAB.parents[2]) if capture.is_relative_to(LAB.parents[2]) else capture
        ),
        "fitted_from": "run 1 of pd-all (decode and join steps, handoff latency), colocated-chunk64 (chunk "
        "steps), colocated (whole-prompt steps, request overhead)",
        "calibrated_by": "phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/calibrate_profile.py",
    }
    d_info = {
        **d_info,
        "join_median_excess_ms": round(join_raw, 4),
        "join_less_last_token_ms": round(join_fit, 4),
    }
    info = {"decode_fit": d_info, "chunk_fit": c_info}
    return LinearProfile(**rounded), {
        **info,
        "capture_manifest": {k: manifest[k] for k in ("recorded", "machine", "versions", "model")},
        # the steps' times are the capture's: so is the verdict on the load they ran under
        "quiet": {
            **{k: v for k, v in (manifest.get("quiet") or {"verdict": "unknown"}).items() if k != "runs"},
            "from": "the capture's manifest (the steps' times are the capture's; calibration_machine is where "
            "the fit was computed, which times nothing)",
        },
    }


def base_profile(model_dir: Path, block_size: int, name: str = "cpu-llama-200m") -> LinearProfile:
    """A profile with no costs yet, for ``model_dir``'s model: its KV bytes per token (bf16), the block size."""
    m = json.loads((Path(model_dir) / "config.json").read_text())
    head_dim = m.get("head_dim") or m["hidden_size"] // m["num_attention_heads"]
    kv = 2 * m["num_hidden_layers"] * m["num_key_value_heads"] * head_dim * 2
    return LinearProfile(name, 0.0, kv_bytes_per_token=kv, block_size=block_size)


def observation_rows(observations) -> list[list]:
    """The observations as plain rows for a manifest: [label, ms, prefill tokens, pairs, decodes, joins,
    handoff] (a first token's composition summed over its steps), so anyone can re-fit them."""
    from fleetsim.fit import FirstToken  # noqa: PLC0415

    rows = []
    for o in observations:
        r = o.row()
        rows.append([o.label, round(o.ms, 3), int(r[2]), int(r[3]), int(r[1]), int(r[5]),
                     int(isinstance(o, FirstToken) and o.handoff)])  # fmt: skip
    return rows


REQUIRED_GROUPS = ("plain decode step", "local join step", "handed-off join step", "chunk step",
                   "whole-prompt step", "idle local first token", "idle handed-off first token")  # fmt: skip


def calibrate_live(
    impl, spec, log_dir: Path, startup_timeout_s: float, log=print
) -> tuple[LinearProfile, dict, list]:
    """The calibration run on this machine (``pdpair.evidence.calibration``) on a pair from ``spec``
    (prepared: ``pdpair.pair.runner.prepare_spec``), always stopped; the fitted profile, what the
    calibration manifest records, and the raw timings (``arrivals.json``)."""
    from pdpair.evidence.calibration import DECODE_BUDGET, measure  # noqa: PLC0415
    from pdpair.pair.runner import served_name, start_all, stop_all  # noqa: PLC0415
    from pdpair.pair.spec import with_side  # noqa: PLC0415
    from pdpair.proxy import ProxyConfig, ProxyThread  # noqa: PLC0415

    spec = with_side(spec, "decode", extra_args=[*spec.decode.extra_args, "--max-num-batched-tokens",
                                                 str(DECODE_BUDGET)])  # fmt: skip
    plans = impl.launch_plans(spec, python=sys.executable)
    plans = [plans["prefill"], plans["decode"]]
    started: list = []
    t0 = time.monotonic()
    load_before = loadavg()
    try:
        log(f"calibration: starting a pair (prefill core {plans[0].env.get('VLLM_CPU_OMP_THREADS_BIND')}, decode "
            f"core {plans[1].env.get('VLLM_CPU_OMP_THREADS_BIND')} with --max-num-batched-tokens {DECODE_BUDGET})")  # fmt: skip
        start_all(plans, log_dir, startup_timeout_s, started)
        t_up = time.monotonic()
        cfg = ProxyConfig(prefill_timeout_s=180.0, decode_timeout_s=180.0)
        local = impl.PDProxyPolicy([plans[0].url], [plans[1].url], local_prefill_max_tokens=256)
        remote = impl.PDProxyPolicy([plans[0].url], [plans[1].url])
        with ProxyThread(local, cfg) as lp, ProxyThread(remote, cfg) as rp:
            raw = asyncio.run(measure(plans[0].url, plans[1].url, lp.url, rp.url, served_name(spec), log))
    finally:
        stop_all(started)
    profile, info = fit_calibration(raw, Path(spec.decode.model), spec.decode.block_size, log_dir)
    info.update({
        "calibrated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**cpu_info(), "os": f"{platform.system()} {platform.release()}"},
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "startup_s": {inst.name: round(inst.startup_s or -1, 1) for inst in started},
        "measure_s": round(time.monotonic() - t_up, 1),
        "wall_s": round(time.monotonic() - t0, 1),
    })  # fmt: skip
    return profile, info, raw


def fit_calibration(
    raw: list[dict], model_dir: Path, block_size: int, log_dir: Path | str = ""
) -> tuple[LinearProfile, dict]:
    """The profile a calibration's raw timings give (``pdpair.evidence.calibration.derive`` +
    ``fleetsim.fit``), and the fit's part of the calibration manifest. RuntimeError when a group of
    steps has fewer than 3 timings (the run did not time what it must)."""
    from pdpair.evidence.calibration import derive  # noqa: PLC0415

    obs, plain = derive(raw)
    counts = {label: sum(o.label == label for o in obs) for label in REQUIRED_GROUPS}
    if missing := [label for label, n in counts.items() if n < 3]:
        raise RuntimeError(f"calibration: too few timed {missing} to fit a profile (got {counts}); see the "
                           f"servers' logs in {log_dir}")  # fmt: skip
    profile, report = fit(obs, base_profile(model_dir, block_size))
    profile = LinearProfile(**{**profile.__dict__, "step_jitter_sigma": round(jitter_sigma(plain), 7),
                               "source": {"calibrated_by": "lab-02-pd-pair/tools/calibrate_profile.py --live",
                                          "machine": cpu_info()}})  # fmt: skip
    info = {
        "method": "a calibration run on this machine: steps of known composition timed on a fresh P/D pair, "
        "fitted by fleetsim.fit (relative least squares, every cost >= 0); see pdpair/evidence/calibration.py",
        "fit": report,
        "observations": observation_rows(obs),
    }
    return profile, info


def write_calibration(out: Path, profile: LinearProfile, info: dict, raw: list | None = None) -> None:
    """``profile.json``, ``manifest.json`` and (given the raw timings) ``arrivals.json``, from which
    ``--refit`` derives the same profile again."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(profile.to_json())
    (out / "manifest.json").write_text(json.dumps(info, indent=1) + "\n")
    if raw is not None:
        (out / "arrivals.json").write_text(json.dumps(raw, separators=(",", ":")) + "\n")


def print_profile(profile: LinearProfile, info: dict | None = None) -> None:
    for k in ("step_ms_fixed", "per_decode_seq_ms", "per_prefill_token_ms", "per_prefill_pair_ms",
              "per_prefill_token_sq_ms", "per_join_ms", "step_jitter_sigma", "request_overhead_ms", "link_latency_ms"):  # fmt: skip
        print(f"  {k:24s} {getattr(profile, k):.6g}")
    for label, g in ((info or {}).get("fit", {}).get("groups") or {}).items():
        print(f"  {label:28s} {g['n']:4d} observed, median {g['measured_ms']:8.1f} ms, fitted {g['fitted_ms']:8.1f} ms "
              f"({g['error']:+.1%})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capture", type=Path, default=CAPTURE_DIR)
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.add_argument("--joins", action="store_true", help="measure the join steps instead of fitting")
    p.add_argument(
        "--live", action="store_true", help="calibrate on this machine (vLLM tier): a fresh pair, ~1 min"
    )
    p.add_argument("--spec", default=str(LAB / "pair.cpu.yaml"), help="--live: the pair spec")
    p.add_argument("--model", default=str(LAB / "models" / "llama-200m"), help="--live: the model folder")
    p.add_argument(
        "--impl", default=None, help="--live: solution | starter | path (default: $LAB_IMPL or solution)"
    )
    p.add_argument(
        "--startup-timeout", type=float, default=600.0, help="--live: seconds a pair may take to start"
    )
    p.add_argument(
        "--refit",
        type=Path,
        default=None,
        help="a calibration folder: fit its arrivals.json again (no vLLM), print, write profile.json there",
    )
    args = p.parse_args(argv)
    if args.refit is not None:
        old = json.loads((args.refit / "manifest.json").read_text())
        raw = json.loads((args.refit / "arrivals.json").read_text())
        profile, fitted = fit_calibration(raw, Path(args.model), 32)
        old.update(fitted)
        write_calibration(args.refit, profile, old)
        print_profile(profile, old)
        return 0
    if args.live:
        from pdpair.pair.runner import DEFAULT_LOG_DIR, prepare_spec  # noqa: PLC0415
        from pdpair.pair.spec import load_pair_spec  # noqa: PLC0415
        from pdpair.proxy import load_impl  # noqa: PLC0415

        out = args.out if args.out != OUT_DIR else LAB / "out" / "calibration"
        spec = prepare_spec(load_pair_spec(args.spec), enforce_eager=False, model=args.model, weights="dummy")
        profile, info, raw = calibrate_live(load_impl(args.impl), spec, DEFAULT_LOG_DIR, args.startup_timeout)
        write_calibration(out, profile, info, raw)
        print_profile(profile, info)
        print(f"wrote {out / 'profile.json'} and manifest.json")
        return 0
    if args.joins:
        report_joins(args.capture.resolve(), args.out)
        return 0
    profile, info = calibrate(args.capture.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(profile.to_json())
    manifest = {
        "calibrated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/calibrate_profile.py",
        "method": "fitted from the capture's token arrival times (see calibrate_profile.py's docstring)",
        "calibration_machine": {
            "os": f"{platform.system()} {platform.release()}",
            "cpus": os.cpu_count(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        },  # fmt: skip
        **info,
    }
    recorded_on = info["capture_manifest"]["machine"]  # the machine the steps ran on: the capture's
    manifest["machine"] = {"cpu": recorded_on.get("cpu"), "cpus": recorded_on.get("cpus"),
                           "bf16_flags": recorded_on.get("bf16_flags"), "bf16_matmul": recorded_on.get("bf16_matmul")}  # fmt: skip
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print_profile(profile)
    print(f"wrote {args.out / 'profile.json'} and manifest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

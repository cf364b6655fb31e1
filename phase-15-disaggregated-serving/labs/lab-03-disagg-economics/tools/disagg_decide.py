"""Should YOUR cluster disaggregate? The lab-03 decision tool, with every intermediate number.

    python disagg_decide.py --model llama-3-8b --prompt-tokens 2048 --output-tokens 257 \
        --fabric ib-hdr --kv-dtype fp16 --ttft-ms 200 --itl-p50-ms 12 --itl-p99-ms 38
    python disagg_decide.py --phase          # the phase's pinned cases
    python disagg_decide.py --gpu h100-sxm --mfu 0.55 ...   # TTFT modelled from FLOPs (task 6) instead

It runs the implementation LAB_IMPL selects (default: solution.py), so it also runs your starter.
Measure TTFT and ITL p50/p99 on your colocated deployment first; the verdict is only as good as they are.
Bad input (NaN, a negative rate, ...) exits with status 2 and a message naming the argument.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from disagg.tables import ACCELERATORS, FABRICS, MODELS
from labkit.impl import impl_path_for, load_module

KV_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
PHASE_CASES = [
    ("IB-class fabric", dict(link="ib-hdr", itl_p99_ms=38.0)),
    ("10 GbE", dict(link="10gbe", itl_p99_ms=38.0)),
    ("no tail spike (p99 13 ms)", dict(link="ib-hdr", itl_p99_ms=13.0)),
]
# The phase's 200 ms TTFT is about 17% of an H100's dense bf16 peak; at a realistic MFU the same
# toll is a bigger share of a smaller TTFT (task 6).
MFU_CASE = ("IB-class fabric, TTFT modelled on an H100 at 55% MFU", dict(gpu="h100-sxm", mfu=0.55))


def explain(
    impl,
    model,
    prompt_tokens,
    output_tokens,
    link,
    kv_dtype,
    ttft_ms,
    itl_p50_ms,
    itl_p99_ms,
    efficiency=1.0,
    max_penalty=None,
    min_spike_ratio=None,
) -> str:
    kw = {}
    if max_penalty is not None:
        kw["max_penalty"] = max_penalty
    if min_spike_ratio is not None:
        kw["min_spike_ratio"] = min_spike_ratio
    dtype_bytes = KV_DTYPE_BYTES[kv_dtype]
    per_token = impl.kv_bytes_per_token(model, dtype_bytes)
    d = impl.should_disaggregate(
        model,
        prompt_tokens,
        output_tokens,
        link,
        ttft_ms,
        itl_p50_ms,
        itl_p99_ms,
        kv_dtype_bytes=dtype_bytes,
        efficiency=efficiency,
        **kw,
    )
    gbps = impl.resolve_link_gbps(link)  # the same lookup the graded functions use
    lines = [
        f"model {model}, KV {kv_dtype}: {per_token:,} B/token",
        f"freight: {prompt_tokens:,} prompt tokens x {per_token:,} B = {d.kv_bytes:,} B "
        f"({d.kv_bytes / 2**20:,.1f} MiB)",
        f"wire: {link} = {gbps:g} Gb/s at {efficiency:.0%} efficiency -> toll {d.transfer_ms:,.2f} ms (paid once)",
        f"penalty: toll / colocated TTFT {ttft_ms:,.1f} ms = {d.penalty_ratio:.1%}",
        f"disease: colocated ITL p99/p50 = {itl_p99_ms:g}/{itl_p50_ms:g} ms = {d.spike_ratio:.2f}x; "
        f"ITL budget an ITL-p99 SLO reserves over {max(output_tokens - 1, 0)} gaps = {d.tax_ms:,.0f} ms",
        f"VERDICT: {d.verdict.value} - {d.reason}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", action="store_true", help="print the phase's three pinned verdicts and exit")
    p.add_argument("--model", default="llama-3-8b", choices=sorted(MODELS))
    p.add_argument("--prompt-tokens", type=int, default=2048)
    p.add_argument("--output-tokens", type=int, default=257)
    link = p.add_mutually_exclusive_group()
    link.add_argument("--fabric", choices=sorted(FABRICS), help="a fabric from the table")
    link.add_argument("--gbps", type=float, help="or a link rate in gigaBITS per second")
    p.add_argument("--kv-dtype", default="fp16", choices=sorted(KV_DTYPE_BYTES))
    ttft = p.add_mutually_exclusive_group()
    ttft.add_argument("--ttft-ms", type=float, default=None, help="measured colocated TTFT (default 200)")
    ttft.add_argument("--mfu", type=float, help="or model TTFT from FLOPs at this fraction of --gpu's peak")
    p.add_argument("--gpu", default="h100-sxm", choices=sorted(ACCELERATORS), help="peak for --mfu")
    p.add_argument("--itl-p50-ms", type=float, default=12.0)
    p.add_argument("--itl-p99-ms", type=float, default=38.0)
    p.add_argument("--efficiency", type=float, default=1.0, help="achieved fraction of line rate, in (0, 1]")
    p.add_argument("--max-penalty", type=float, default=None)
    p.add_argument("--min-spike-ratio", type=float, default=None)
    p.add_argument(
        "--handoff-ms", type=float, help="with --prefill-tokens-per-s: also print the local-prefill knob"
    )
    p.add_argument("--prefill-tokens-per-s", type=float, help="colocated prefill throughput (task 7)")
    a = p.parse_args(argv)
    impl = load_module(impl_path_for(Path(__file__).resolve().parents[1]))
    if a.phase:
        for title, case in PHASE_CASES:
            print(f"--- Llama-3-8B, 2048-token prompt, {title}")
            print(
                explain(impl, "llama-3-8b", 2048, 257, case["link"], "fp16", 200.0, 12.0, case["itl_p99_ms"])
            )
        title, case = MFU_CASE
        print(f"--- Llama-3-8B, 2048-token prompt, {title}")
        ttft_ms = impl.prefill_ttft_ms("llama-3-8b", 2048, case["gpu"], case["mfu"])  # task 6
        print(explain(impl, "llama-3-8b", 2048, 257, "ib-hdr", "fp16", ttft_ms, 12.0, 38.0))
        return 0
    link_value = a.fabric or (a.gbps if a.gbps is not None else "ib-hdr")
    try:
        lines = []
        if a.mfu is not None:
            ttft_ms = impl.prefill_ttft_ms(a.model, a.prompt_tokens, a.gpu, a.mfu)
            lines.append(
                f"TTFT modelled: prefill FLOPs at {a.mfu:g} x {a.gpu}'s peak (compute only, no queueing)"
            )
        else:
            ttft_ms = 200.0 if a.ttft_ms is None else a.ttft_ms
        lines.append(
            explain(
                impl,
                a.model,
                a.prompt_tokens,
                a.output_tokens,
                link_value,
                a.kv_dtype,
                ttft_ms,
                a.itl_p50_ms,
                a.itl_p99_ms,
                a.efficiency,
                a.max_penalty,
                a.min_spike_ratio,
            )
        )
        if a.handoff_ms is not None and a.prefill_tokens_per_s is not None:
            kw = {} if a.max_penalty is None else {"max_penalty": a.max_penalty}
            knob = impl.local_prefill_max_tokens(
                a.model,
                link_value,
                a.prefill_tokens_per_s,
                a.handoff_ms,
                kv_dtype_bytes=KV_DTYPE_BYTES[a.kv_dtype],
                efficiency=a.efficiency,
                **kw,
            )
            meaning = {None: "no prompt length pays on this wire: prefill everything locally"}.get(
                knob, f"prompts of more than {knob} tokens pay for remote prefill"
            )
            lines.append(f"local_prefill_max_tokens: {knob} ({meaning})")
        print("\n".join(lines))  # nothing is printed unless every number is valid
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

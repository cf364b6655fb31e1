"""Should YOUR cluster disaggregate? The lab-03 decision tool, with every intermediate number.

    python disagg_decide.py --model llama-3-8b --prompt-tokens 2048 --fabric ib-hdr --kv-dtype fp16 \
        --ttft-ms 200 --itl-p50-ms 12 --itl-p99-ms 38 --decode-batch 4
    python disagg_decide.py --phase          # the phase's cases (six verdicts)
    python disagg_decide.py --gpu h100-sxm --mfu 0.55 ...   # TTFT modelled from FLOPs (task 6) instead
    python disagg_decide.py --layerwise ...  # the toll left when KV streams per layer under prefill (task 3)

It runs the implementation LAB_IMPL selects (default: solution.py), so it also runs your starter.
Measure on your colocated deployment first: TTFT, the steady ITL (p50) and the gap a prefill stalls
(p99, or the step with a prompt in it), how many decodes run beside a prefill, and how long the stall
lasts in all (--stall-ms; default p99 - p50, one stalled gap). The verdict is only as good as they are.
Bad input (NaN, a negative rate, ...) exits with status 2 and a message naming the argument.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from disagg.tables import ACCELERATORS, FABRICS, MODELS, Stall
from labkit.impl import impl_path_for, load_module

KV_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
PHASE = dict(model="llama-3-8b", prompt=2048, ttft=200.0, p50=12.0, p99=38.0, batch=4)
# (title, overrides). The phase's ~200 ms TTFT is ~15% of an H100's dense bf16 peak; at 55% MFU (task 6)
# the same toll is a bigger share of a smaller TTFT - on ONE HDR link, serialized. An H100 node has one
# 400 Gb/s NDR NIC per GPU, and streaming per layer (task 3) hides all but the last layer.
PHASE_CASES = [
    ("IB-class fabric", dict(link="ib-hdr")),
    ("10 GbE", dict(link="10gbe")),
    ("no tail spike (p99 13 ms)", dict(link="ib-hdr", p99=13.0)),
    ("TTFT modelled on an H100 at 55% MFU, one IB HDR link, serialized, one decode beside it",
     dict(link="ib-hdr", mfu=0.55, batch=1, stall=5.0, p99=30.0)),
    ("TTFT modelled on an H100 at 55% MFU, its NDR NIC, KV streamed per layer, one decode beside it",
     dict(link="ib-ndr", mfu=0.55, batch=1, stall=5.0, p99=30.0, layerwise=True)),
    ("a 32k-token prompt on 25 GbE stalling 32 decodes (H100 roofline, 50% MFU)",
     dict(link="25gbe", prompt=32768, mfu=0.5, batch=32, p50=11.6, stall_from_h100=True)),
]  # fmt: skip


def explain(impl, model, prompt_tokens, link, kv_dtype, ttft_ms, itl_ms, stall, decode_batch, efficiency=1.0,
            layerwise=False, max_penalty=None, min_spike_ratio=None) -> str:  # fmt: skip
    kw = {
        k: v for k, v in (("max_penalty", max_penalty), ("min_spike_ratio", min_spike_ratio)) if v is not None
    }
    dtype_bytes = KV_DTYPE_BYTES[kv_dtype]
    per_token = impl.kv_freight_bytes(model, 1, dtype_bytes=dtype_bytes)
    d = impl.should_disaggregate(model, prompt_tokens, link, ttft_ms, itl_ms, stall, decode_batch,
                                 kv_dtype_bytes=dtype_bytes, efficiency=efficiency, layerwise=layerwise, **kw)  # fmt: skip
    gbps = impl.resolve_link_gbps(link)  # the same lookup the graded functions use
    how = "streamed per layer under prefill: exposed" if layerwise else "serialized after prefill:"
    return "\n".join([
        f"model {model}, KV {kv_dtype}: {per_token:,} B/token",
        f"freight: {prompt_tokens:,} prompt tokens -> {d.kv_bytes:,} B ({d.kv_bytes / 2**20:,.1f} MiB)",
        f"wire: {link} = {gbps:g} Gb/s at {efficiency:.0%} efficiency, {how} toll {d.toll_ms:,.2f} ms (paid once)",
        f"penalty: toll / colocated TTFT {ttft_ms:,.1f} ms = {d.penalty_ratio:.1%}",
        f"stall: {decode_batch} decode(s) beside the prefill; gap {itl_ms:g} -> {stall.worst_gap_ms:,.1f} ms "
        f"({d.spike_ratio:.2f}x), {stall.per_decode_ms:,.1f} ms each in all -> {d.spared_ms:,.0f} ms spared by going remote",
        f"VERDICT: {d.verdict.value} - {d.reason}",
    ])  # fmt: skip


def phase(impl) -> None:
    for title, case in PHASE_CASES:
        c = PHASE | case
        ttft = (
            impl.prefill_ttft_ms(c["model"], c["prompt"], "h100-sxm", c["mfu"]) if "mfu" in c else c["ttft"]
        )
        if c.get("stall_from_h100"):
            from fleetsim.profile import h100_profile  # noqa: PLC0415 - the twin's H100 roofline step model

            stall = impl.prefill_stall(
                h100_profile(c["model"]), c["prompt"], c["batch"], decode_context=c["batch"] * 1024
            )
        else:
            stall = Stall(c.get("stall", c["p99"] - c["p50"]), c["p99"])
        print(f"--- Llama-3-8B, {c['prompt']}-token prompt, {title}")
        print(explain(impl, c["model"], c["prompt"], c["link"], "fp16", ttft, c["p50"], stall, c["batch"],
                      layerwise=c.get("layerwise", False)))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", action="store_true", help="print the phase's six verdicts and exit")
    p.add_argument("--model", default="llama-3-8b", choices=sorted(MODELS))
    p.add_argument("--prompt-tokens", type=int, default=2048)
    link = p.add_mutually_exclusive_group()
    link.add_argument("--fabric", choices=sorted(FABRICS), help="a fabric from the table")
    link.add_argument("--gbps", type=float, help="or a link rate in gigaBITS per second")
    p.add_argument("--kv-dtype", default="fp16", choices=sorted(KV_DTYPE_BYTES))
    ttft = p.add_mutually_exclusive_group()
    ttft.add_argument("--ttft-ms", type=float, default=None, help="measured colocated TTFT (default 200)")
    ttft.add_argument("--mfu", type=float, help="or model TTFT from FLOPs at this fraction of --gpu's peak")
    p.add_argument("--gpu", default="h100-sxm", choices=sorted(ACCELERATORS), help="peak for --mfu")
    p.add_argument("--itl-p50-ms", type=float, default=12.0, help="the steady inter-token gap")
    p.add_argument("--itl-p99-ms", type=float, default=38.0, help="the gap a prefill stalls")
    p.add_argument("--stall-ms", type=float, help="each decode's stall in all (default p99 - p50)")
    p.add_argument("--decode-batch", type=int, default=4, help="decodes running beside a prefill")
    p.add_argument("--layerwise", action="store_true", help="KV streams per layer while prefill runs")
    p.add_argument("--efficiency", type=float, default=1.0, help="achieved fraction of line rate, in (0, 1]")
    p.add_argument("--max-penalty", type=float, default=None)
    p.add_argument("--min-spike-ratio", type=float, default=None)
    p.add_argument(
        "--handoff-ms", type=float, help="with --prefill-tokens-per-s: also print the local-prefill knob"
    )
    p.add_argument("--prefill-tokens-per-s", type=float, help="colocated prefill throughput (task 9)")
    a = p.parse_args(argv)
    impl = load_module(impl_path_for(Path(__file__).resolve().parents[1]))
    if a.phase:
        phase(impl)
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
        p50, p99 = impl.number("itl_p50_ms", a.itl_p50_ms), impl.number("itl_p99_ms", a.itl_p99_ms)
        stall = Stall(p99 - p50 if a.stall_ms is None else impl.number("stall_ms", a.stall_ms), p99)
        lines.append(explain(impl, a.model, a.prompt_tokens, link_value, a.kv_dtype, ttft_ms, a.itl_p50_ms, stall,
                             a.decode_batch, a.efficiency, a.layerwise, a.max_penalty, a.min_spike_ratio))  # fmt: skip
        if a.handoff_ms is not None and a.prefill_tokens_per_s is not None:
            kw = {} if a.max_penalty is None else {"max_penalty": a.max_penalty}
            knob = impl.local_prefill_max_tokens(a.model, link_value, a.prefill_tokens_per_s, a.handoff_ms,
                                                 kv_dtype_bytes=KV_DTYPE_BYTES[a.kv_dtype], efficiency=a.efficiency, **kw)  # fmt: skip
            meaning = {
                None: "no prompt length pays on this wire by the penalty rule: prefill everything locally"
            }.get(knob, f"prompts of more than {knob} tokens pay for remote prefill")
            lines.append(f"local_prefill_max_tokens: {knob} ({meaning})")
        print("\n".join(lines))  # nothing is printed unless every number is valid
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

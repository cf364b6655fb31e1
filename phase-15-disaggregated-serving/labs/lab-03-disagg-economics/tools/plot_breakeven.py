"""Plot the break-even link bandwidth against prompt length (needs the `plot` extra: matplotlib).

    python plot_breakeven.py [--out out/breakeven.png] [--gpu h100-sxm] [--mfu 0.5] [--max-penalty 0.10]
    python plot_breakeven.py --layerwise      # KV streamed per layer under the prefill (task 3's model)

Break-even = the slowest ONE link whose toll stays within max_penalty of colocated TTFT: YOUR
breakeven_gbps (task 7), serialized unless --layerwise (the penalty rule of task 8 alone: no stall
weighed, no parallel NICs - each of those lowers it; say so when you quote the plot). Which
implementation runs: LAB_IMPL (solution by default; LAB_IMPL=starter for yours).

TTFT here is MODELLED, not measured: your prefill_ttft_ms (task 6) at an ASSUMED --mfu of --gpu's
datasheet peak. 50% is in the range well-tuned large prefills are reported to reach; 15% is what the
phase's ~200 ms TTFT for Llama-3-8B x 2048 tokens implies (try --mfu 0.15). A faster prefill shortens
TTFT and so RAISES every break-even rate. With linear prefill cost the break-even rate would be flat
in n (freight and TTFT both grow linearly); attention makes long prompts tolerate slower links.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from disagg.tables import ACCELERATORS, FABRICS, MODELS
from labkit.impl import impl_path_for, load_module

SERIES = [("llama-3-8b", 2), ("llama-3-8b", 1), ("llama-3-70b", 2), ("qwen2.5-7b", 2), ("deepseek-v3", 1)]
PROMPTS = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def breakeven_gbps(impl, model_name: str, dtype_bytes: int, n: int, gpu: str, mfu: float, max_penalty: float,
                   layerwise: bool = False) -> float:  # fmt: skip
    """Gb/s at which the toll is exactly max_penalty of the modelled TTFT (tasks 1, 6 and 7)."""
    ttft_ms = impl.prefill_ttft_ms(model_name, n, gpu, mfu)
    nbytes = impl.kv_freight_bytes(model_name, n, dtype_bytes=dtype_bytes)
    layers = MODELS[model_name].layers if layerwise else 1
    return impl.breakeven_gbps(nbytes, ttft_ms, layers=layers, max_penalty=max_penalty)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "out" / "breakeven.png"))
    p.add_argument("--gpu", default="h100-sxm", choices=sorted(ACCELERATORS), help="prefill chip (its peak)")
    p.add_argument("--mfu", type=float, default=0.5, help="ASSUMED fraction of peak prefill achieves")
    p.add_argument("--max-penalty", type=float, default=0.10)
    p.add_argument(
        "--layerwise", action="store_true", help="KV streamed per layer under the prefill (task 3)"
    )
    a = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: pip install -e '.[plot]'", file=sys.stderr)
        return 2
    impl = load_module(impl_path_for(Path(__file__).resolve().parents[1]))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    peak = ACCELERATORS[a.gpu].bf16_dense_tflops
    rate = f"{a.mfu:.0%} MFU on {a.gpu} ({a.mfu * peak:.0f} of {peak:g} TFLOP/s)"
    print(f"break-even Gb/s (toll <= {a.max_penalty:.0%} of TTFT modelled at {rate}):")
    print("  " + "model/kv".ljust(18) + "".join(f"{n:>8}" for n in PROMPTS))
    for name, dtype_bytes in SERIES:
        ys = [
            breakeven_gbps(impl, name, dtype_bytes, n, a.gpu, a.mfu, a.max_penalty, a.layerwise)
            for n in PROMPTS
        ]
        label = f"{name} {'fp8' if dtype_bytes == 1 else 'fp16'}"
        print("  " + label.ljust(18) + "".join(f"{y:8.0f}" for y in ys))
        ax.plot(PROMPTS, ys, marker="o", label=label)
    for fabric in ("10gbe", "100gbe", "ib-hdr", "ib-ndr"):
        ax.axhline(FABRICS[fabric].gbps, color="grey", lw=0.8, ls="--")
        ax.text(PROMPTS[0], FABRICS[fabric].gbps * 1.05, fabric, color="grey", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("break-even link rate (Gb/s, line rate)")
    ax.set_title(
        f"Slowest single link whose {'per-layer streamed' if a.layerwise else 'serialized'} KV toll is "
        f"<= {a.max_penalty:.0%} of TTFT\n"
        f"(TTFT modelled from FLOPs at an assumed {rate}; links above a curve qualify)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Plot the break-even link bandwidth against prompt length (needs the `plot` extra: matplotlib).

    python plot_breakeven.py [--out out/breakeven.png] [--tflops 400] [--max-penalty 0.10]

Break-even = the slowest link whose toll stays within max_penalty of colocated TTFT:
    gbps* = freight_bytes x 8 / (max_penalty x TTFT_s) / 1e9

TTFT here is MODELLED, not measured (state it when you quote the plot): prefill FLOPs =
2 x params x n  +  2 x layers x hidden x n^2 (causal attention's QK^T and AV), at an ASSUMED achieved
rate of --tflops. The default, 170 TFLOP/s (~17% of an H100's dense BF16 peak), is chosen so the
modelled Llama-3-8B 2048-token TTFT is ~200 ms, the colocated TTFT the lab's pinned cases assume. For DeepSeek-V3 the params are the
37B activated per token. With linear prefill cost the break-even rate would be flat in n (freight and
TTFT both grow linearly); the attention term makes long prompts tolerate slower links.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from disagg_tables import FABRICS, MODELS  # noqa: E402

from labkit.impl import impl_path_for, load_module  # noqa: E402

SERIES = [("llama-3-8b", 2), ("llama-3-8b", 1), ("llama-3-70b", 2), ("qwen2.5-7b", 2), ("deepseek-v3", 1)]
PROMPTS = [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def modelled_ttft_ms(model_name: str, n: int, tflops: float) -> float:
    m = MODELS[model_name]
    flops = 2 * m.params_b * 1e9 * n + 2 * m.layers * m.hidden * n * n
    return flops / (tflops * 1e12) * 1e3


def breakeven_gbps(
    impl, model_name: str, dtype_bytes: int, n: int, tflops: float, max_penalty: float
) -> float:
    freight = n * impl.kv_bytes_per_token(model_name, dtype_bytes)
    return freight * 8 / (max_penalty * modelled_ttft_ms(model_name, n, tflops) / 1e3) / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "breakeven.png"))
    p.add_argument("--tflops", type=float, default=170.0, help="ASSUMED achieved prefill TFLOP/s")
    p.add_argument("--max-penalty", type=float, default=0.10)
    a = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: pip install -e '.[plot]'", file=sys.stderr)
        return 2
    impl = load_module(impl_path_for(Path(__file__).resolve().parent))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    print(f"break-even Gb/s (toll <= {a.max_penalty:.0%} of modelled TTFT at {a.tflops:g} TFLOP/s):")
    print("  " + "model/kv".ljust(18) + "".join(f"{n:>8}" for n in PROMPTS))
    for name, dtype_bytes in SERIES:
        ys = [breakeven_gbps(impl, name, dtype_bytes, n, a.tflops, a.max_penalty) for n in PROMPTS]
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
        f"Slowest link that keeps the KV toll <= {a.max_penalty:.0%} of TTFT\n"
        f"(TTFT modelled from FLOPs at an assumed {a.tflops:g} TFLOP/s; links above a curve qualify)",
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

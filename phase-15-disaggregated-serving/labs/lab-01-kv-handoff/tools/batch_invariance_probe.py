"""Does a request's result depend on its batch? Measure it (not a test; runs on CPU and, if present, CUDA).

    python batch_invariance_probe.py [--hidden 4096] [--out 4096]

One row x (a request's hidden state) is multiplied by a weight matrix alone, then as row 0 of batches of
2..512 rows (other requests). Mathematically the results are identical; in floating point a kernel may
pick a different tiling / reduction order for another batch shape, and then the bits differ. minivllm
avoids the question by computing one token at a time (lab-01 README, "batch invariance"); vLLM needs
batch-invariant kernels (VLLM_BATCH_INVARIANT=1) to promise the same.
"""

from __future__ import annotations

import argparse
import platform

import torch

BATCHES = (2, 3, 4, 8, 16, 32, 64, 128, 256, 512)


def probe(device: str, dtype: torch.dtype, hidden: int, out: int) -> tuple[int, float]:
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(hidden, out, generator=g).to(device=device, dtype=dtype)
    others = torch.randn(max(BATCHES), hidden, generator=g).to(device=device, dtype=dtype)
    x = others[:1]
    alone = x @ w
    differ, worst = 0, 0.0
    for b in BATCHES:
        in_batch = (others[:b] @ w)[:1]
        if not torch.equal(alone, in_batch):
            differ += 1
            worst = max(worst, (alone.float() - in_batch.float()).abs().max().item())
    return differ, worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--out", type=int, default=4096)
    a = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} CPU threads"
    )
    if torch.cuda.is_available():
        print(f"cuda device: {torch.cuda.get_device_name(0)}")
    print(f"row 0 of (batch x {a.hidden}) @ ({a.hidden} x {a.out}) vs the row alone, batches {BATCHES}:")
    for device in devices:
        for dtype in (torch.float32, torch.bfloat16):
            differ, worst = probe(device, dtype, a.hidden, a.out)
            print(f"  {device:4s} {str(dtype):15s} bits differ in {differ:2d}/{len(BATCHES)} batch sizes; "
                  f"max |diff| {worst:.3g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

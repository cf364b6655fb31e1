"""Given data and types for lab-03 (not student work): model shapes, fabrics, and the verdict.

Every entry names its source. Figures are line rates and published configs, not measurements of ours;
see ../../../README.md and the lab README ("Where the numbers come from").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class ModelShape:
    """What a model's KV cache looks like per token.

    attention = "gqa": every layer caches K and V, each kv_heads x head_dim elements.
    attention = "mla": every layer caches ONE shared latent of (mla_latent_dim + mla_rope_dim) elements
    (DeepSeek's multi-head latent attention): there is no separate K and V, so no factor 2.
    params_b (billions of parameters a token passes through: the ACTIVATED ones for a MoE) and hidden
    (the model width) feed the prefill FLOPs model (task 6); 0 means unknown.
    """

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    attention: str = "gqa"
    mla_latent_dim: int = 0
    mla_rope_dim: int = 0
    params_b: float = 0.0
    hidden: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if self.attention not in ("gqa", "mla"):
            raise ValueError(f"attention must be 'gqa' or 'mla', got {self.attention!r}")
        if self.layers <= 0:
            raise ValueError(f"layers must be positive, got {self.layers}")


@dataclass(frozen=True)
class Fabric:
    """A link between a prefill and a decode machine, at line rate, one direction."""

    name: str
    gbps: float  # gigaBITS per second (1 Gb/s = 1e9 bit/s)
    source: str


MODELS: dict[str, ModelShape] = {
    m.name: m
    for m in [
        ModelShape(
            "llama-3-8b",
            32,
            8,
            128,
            params_b=8.0,
            hidden=4096,
            source="Meta Llama-3-8B params.json / HF config.json",
        ),
        ModelShape(
            "llama-3-70b",
            80,
            8,
            128,
            params_b=70.6,
            hidden=8192,
            source="Meta Llama-3-70B params.json / HF config.json",
        ),
        ModelShape(
            "mistral-7b",
            32,
            8,
            128,
            params_b=7.2,
            hidden=4096,
            source="transformers MistralConfig defaults (Mistral-7B v0.1)",
        ),
        ModelShape("qwen2.5-7b", 28, 4, 128, params_b=7.6, hidden=3584, source="Qwen2.5-7B config.json"),
        ModelShape(
            "tiny-llama",
            8,
            4,
            64,
            params_b=0.056,  # 2 x 16.4M embedding/unembedding + 8 x 2.95M per layer
            hidden=512,
            source="lab-02's models/tiny-llama/config.json (the CPU pair's random-weight Llama, bf16)",
        ),
        ModelShape(
            "deepseek-v3",
            61,
            1,
            0,
            attention="mla",
            mla_latent_dim=512,
            mla_rope_dim=64,
            params_b=37.0,
            hidden=7168,  # 37B ACTIVATED parameters per token (MoE)
            source="DeepSeek-V3 inference/configs/config_671B.json (kv_lora_rank 512, qk_rope_head_dim 64)",
        ),
    ]
}

FABRICS: dict[str, Fabric] = {
    f.name: f
    for f in [
        Fabric("10gbe", 10, "IEEE 802.3ae line rate"),
        Fabric("25gbe", 25, "IEEE 802.3by line rate"),
        Fabric("100gbe", 100, "IEEE 802.3ba line rate"),
        Fabric("400gbe", 400, "IEEE 802.3bs line rate"),
        Fabric("ib-hdr", 200, "InfiniBand HDR 4x line rate (200 Gb/s)"),
        Fabric("ib-ndr", 400, "InfiniBand NDR 4x line rate (400 Gb/s)"),
        Fabric("nvlink4", 3600, "NVLink 4 (H100), 900 GB/s bidirectional -> ~450 GB/s one direction"),
        Fabric("pcie5-x16", 504, "PCIe Gen5 x16, ~63 GB/s one direction"),
    ]
}


@dataclass(frozen=True)
class Accelerator:
    """A prefill chip's PEAK dense bf16 rate: what the datasheet promises, not what prefill achieves."""

    name: str
    bf16_dense_tflops: float  # TFLOP/s (1e12 FLOP/s), dense (no 2:4 sparsity)
    source: str


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in [
        Accelerator(
            "h100-sxm",
            989.0,
            "NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 TFLOPS with sparsity; dense is half",
        ),
        Accelerator(
            "a100-sxm",
            312.0,
            "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS dense (624 with sparsity)",
        ),
    ]
}


class Verdict(StrEnum):
    YES = "YES"  # there is a tail to cure and the wire's toll is small
    NO_SLOW_LINK = "NO_SLOW_LINK"  # there is a tail, but shipping the KV costs too much TTFT
    NO_NO_DISEASE = "NO_NO_DISEASE"  # colocated decode shows no interference spike: nothing to cure


@dataclass(frozen=True)
class Decision:
    """The verdict and every intermediate number behind it (what the CLI prints)."""

    verdict: Verdict
    kv_bytes: int  # freight for the prompt: prompt_tokens x kv_bytes_per_token
    transfer_ms: float  # the toll, paid once per request
    penalty_ratio: float  # transfer_ms / colocated TTFT
    spike_ratio: float  # colocated ITL p99 / p50
    tax_ms: float  # interference tax colocated decode pays over the request (see interference_tax_ms)
    reason: str

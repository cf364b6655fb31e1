"""Given data and types for lab-03 (not student work): model shapes, fabrics, accelerators with a dated
price list, and the small types the tasks take and return.

Every entry names its source. Figures are published configs, line rates and datasheet peaks, not
measurements of ours; see the lab README ("Where the numbers come from").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class ModelShape:
    """A model's shape, as its config.json states it.

    Attention, per layer: ``heads`` query heads; ``attention`` says how keys and values are kept.
      "gqa" (grouped-query, MHA when kv_heads == heads): ``kv_heads`` key/value heads of ``head_dim``.
      "mla" (DeepSeek's multi-head latent attention): keys and values are rebuilt from a compressed
        latent of ``mla_latent_dim`` (config: kv_lora_rank) plus a decoupled rotary key of
        ``mla_rope_dim`` (qk_rope_head_dim) per token; each query head scores ``mla_nope_dim``
        (qk_nope_head_dim) + ``mla_rope_dim`` dims against its key and weights ``mla_v_dim``
        (v_head_dim) dims of value. kv_heads/head_dim do not apply.
    Size: ``params_b`` billions of parameters as published - for a mixture of experts the ACTIVATED
    ones per token - embedding and output head included; ``vocab`` x ``hidden`` is one embedding
    table; ``tied_embeddings`` says whether the output head reuses it. 0 means unknown.
    """

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    attention: str = "gqa"
    mla_latent_dim: int = 0
    mla_rope_dim: int = 0
    mla_nope_dim: int = 0
    mla_v_dim: int = 0
    heads: int = 0
    hidden: int = 0
    vocab: int = 0
    params_b: float = 0.0
    tied_embeddings: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if self.attention not in ("gqa", "mla"):
            raise ValueError(f"attention must be 'gqa' or 'mla', got {self.attention!r}")
        if self.layers <= 0:
            raise ValueError(f"layers must be positive, got {self.layers}")


def _llama(name: str, layers: int, heads: int, kv_heads: int, head_dim: int, hidden: int, vocab: int,
           params: int, source: str) -> ModelShape:  # fmt: skip
    return ModelShape(name, layers, kv_heads, head_dim, heads=heads, hidden=hidden, vocab=vocab,
                      params_b=params / 1e9, source=source)  # fmt: skip


MODELS: dict[str, ModelShape] = {
    m.name: m
    for m in [
        _llama("llama-3-8b", 32, 32, 8, 128, 4096, 128256, 8_030_261_248,
               "Meta-Llama-3-8B config.json (MLP 14336, untied head); 8,030,261,248 parameters as published"),
        _llama("llama-3-70b", 80, 64, 8, 128, 8192, 128256, 70_553_706_496,
               "Meta-Llama-3-70B config.json (MLP 28672, untied head); 70.55B parameters as published"),
        _llama("mistral-7b", 32, 32, 8, 128, 4096, 32000, 7_241_732_096,
               "Mistral-7B-v0.1 config.json / transformers MistralConfig defaults; 7.24B parameters"),
        _llama("qwen2.5-7b", 28, 28, 4, 128, 3584, 152064, 7_615_616_512,
               "Qwen2.5-7B config.json (MLP 18944, QKV bias); model card: 7.61B, 6.53B non-embedding"),
        _llama("tiny-llama", 8, 8, 4, 64, 512, 32000, 56_369_664,
               "lab-02's models/tiny-llama/config.json (random weights, bf16): the wire capture's model"),
        _llama("llama-200m", 12, 16, 4, 64, 1024, 32000, 200_827_904,
               "lab-02's models/llama-200m/config.json (random weights, bf16): the signature capture's model"),
        ModelShape("opt-66b", 64, 72, 128, heads=72, hidden=9216, vocab=50272,
                   source="OPT paper (Zhang et al. 2022), Table 1: 64 layers, 72 heads, d_model 9216 (MHA); "
                   "the model of DistServe's KV-size example; parameter count not used here"),
        ModelShape("deepseek-v3", 61, 0, 0, attention="mla", mla_latent_dim=512, mla_rope_dim=64,
                   mla_nope_dim=128, mla_v_dim=128, heads=128, hidden=7168, vocab=129280, params_b=36.7,
                   source="DeepSeek-V3 inference/configs/config_671B.json (kv_lora_rank 512, qk_rope_head_dim 64, "
                   "qk_nope_head_dim 128, v_head_dim 128, 128 heads); README_WEIGHTS.md: 36.7B activated "
                   "parameters including 0.9B embedding and 0.9B output head"),
    ]
}  # fmt: skip


@dataclass(frozen=True)
class Fabric:
    """A link between a prefill and a decode machine, at line rate, one direction."""

    name: str
    gbps: float  # gigaBITS per second (1 Gb/s = 1e9 bit/s)
    source: str


FABRICS: dict[str, Fabric] = {
    f.name: f
    for f in [
        Fabric("10gbe", 10, "IEEE 802.3ae line rate"),
        Fabric("25gbe", 25, "IEEE 802.3by line rate"),
        Fabric("100gbe", 100, "IEEE 802.3ba line rate"),
        Fabric("400gbe", 400, "IEEE 802.3bs line rate"),
        Fabric("ib-hdr", 200, "InfiniBand HDR 4x line rate (200 Gb/s)"),
        Fabric(
            "ib-ndr",
            400,
            "InfiniBand NDR 4x line rate (400 Gb/s): a DGX H100 has eight single-port ConnectX-7 at up to "
            "400 Gb/s for its compute fabric, one per GPU (NVIDIA DGX BasePOD reference architecture)",
        ),
        Fabric("nvlink4", 3600, "NVLink 4 (H100), 900 GB/s bidirectional -> ~450 GB/s one direction"),
        Fabric("pcie5-x16", 504, "PCIe Gen5 x16, ~63 GB/s one direction"),
    ]
}

PRICES_AS_OF = "2026-04"
PRICE_SOURCE = (
    "Jarvislabs on-demand list price per GPU-hour, 'H100 vs A100' (jarvislabs.ai/blog/h100-vs-a100, "
    "updated April 2026): A100 80GB $1.49, H100 80GB $2.69"
)


@dataclass(frozen=True)
class Accelerator:
    """One GPU: datasheet PEAKS (what it promises, not what a kernel achieves) and a dated price."""

    name: str
    bf16_dense_tflops: float  # TFLOP/s (1e12 FLOP/s), dense (no 2:4 sparsity)
    hbm_tb_s: float = 0.0  # HBM bandwidth, TB/s (1e12 B/s)
    hbm_gb: float = 0.0  # HBM capacity, GB (1e9 B)
    price_per_hour: float = 0.0  # $ per GPU-hour, as of PRICES_AS_OF (0: not priced)
    source: str = ""


ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in [
        Accelerator(
            "h100-sxm",
            989.0,
            3.35,
            80.0,
            2.69,
            "NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 TFLOPS with sparsity (dense is half), "
            "HBM3 3.35 TB/s, 80 GB; price: " + PRICE_SOURCE,
        ),
        Accelerator(
            "a100-sxm",
            312.0,
            2.039,
            80.0,
            1.49,
            "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): BF16 312 TFLOPS dense (624 with sparsity), "
            "HBM2e 2,039 GB/s, 80 GB; price: " + PRICE_SOURCE,
        ),
    ]
}


class Verdict(StrEnum):
    YES = "YES"  # there is a stall to cure and the toll is worth paying
    NO_SLOW_LINK = "NO_SLOW_LINK"  # there is a stall, but shipping the KV costs more than it spares
    NO_NO_DISEASE = "NO_NO_DISEASE"  # the prefill stalls no decode noticeably: nothing to cure


@dataclass(frozen=True)
class Decision:
    """The verdict and every intermediate number behind it (what the CLI prints)."""

    verdict: Verdict
    kv_bytes: int  # the freight: the prompt's KV as it crosses the wire (task 1)
    toll_ms: float  # what the wire adds to this request's TTFT (task 2, or task 3 when layer-wise)
    penalty_ratio: float  # toll_ms / colocated TTFT (solution.penalty_ratio, given)
    spike_ratio: float  # the decode gap with this prefill in it / the steady gap
    spared_ms: float  # decode_batch x stall_ms: the delay the co-batched decodes are spared in all
    reason: str


# ---------------------------------------------------------------- step-time models (tasks 4, 5, 13)


@dataclass(frozen=True)
class StepSample:
    """One engine step as measured: what it carried and how long it took."""

    prefill_tokens: int  # prompt tokens computed in the step (a whole prompt or a chunk)
    prefill_pairs: int  # (query, key) pairs their causal attention scored
    decode_seqs: int  # running requests that each decoded one token in it
    step_ms: float


@dataclass(frozen=True)
class StepModel:
    """step_ms = fixed_ms + per_decode_ms x decode_seqs + per_prefill_token_ms x prefill_tokens
    + per_prefill_pair_ms x prefill_pairs. ``step_ms`` has the signature of fleetsim's profiles, so a
    task that takes a step model takes either (decode_context and joins are not in this model).
    Example: StepModel(25, 0.5, 1, 0).step_ms(32, 528, 4, 0) = 25 + 2 + 32 = 59 ms."""

    fixed_ms: float
    per_decode_ms: float = 0.0
    per_prefill_token_ms: float = 0.0
    per_prefill_pair_ms: float = 0.0

    def step_ms(self, prefill_tokens: int, prefill_pairs: int, decode_seqs: int, decode_context: int = 0,
                joins: int = 0) -> float:  # fmt: skip
        return (
            self.fixed_ms
            + self.per_decode_ms * decode_seqs
            + self.per_prefill_token_ms * prefill_tokens
            + self.per_prefill_pair_ms * prefill_pairs
        )


@dataclass(frozen=True)
class Stall:
    """What one prompt's prefill costs the decodes it shares steps with (task 5), ms."""

    per_decode_ms: float  # extra time each co-batched decode waits in all while the prompt prefills
    worst_gap_ms: float  # the longest single inter-token gap a co-batched decode sees meanwhile


# ---------------------------------------------------------------- the fleet (tasks 13-15)


@dataclass(frozen=True)
class Capacity:
    """Per-instance capacities and the best prefill:decode split of a fleet (task 13), req/s."""

    prefill_rps: float  # one prefill instance
    decode_rps: float  # one decode instance
    prefill: int  # instances given to prefill
    decode: int  # instances given to decode
    goodput_rps: float  # what the split serves, the whole fleet


@dataclass(frozen=True)
class Offer:
    """One instance of a hardware kind, offered for one role: its price and what it serves there."""

    hardware: str
    role: str  # "prefill" | "decode"
    price_per_hour: float  # $ per instance-hour
    rps: float  # requests/s one instance serves in that role (task 13)


@dataclass(frozen=True)
class FleetCost:
    """The cheapest pools that serve a rate (task 14)."""

    prefill: Offer
    prefill_instances: int
    decode: Offer
    decode_instances: int
    dollars_per_hour: float
    dollars_per_million_tokens: float  # per million OUTPUT tokens served


@dataclass(frozen=True)
class Scenario:
    """Part 3: the traffic, the SLOs and the menu a plan must serve (see the README)."""

    name: str
    model: str  # a name in MODELS
    mix: str  # fleetsim's built-in traffic: "chat", "rag" or "mix"
    rate_rps: float  # Poisson arrivals, requests/s
    ttft_slo_ms: float
    itl_slo_ms: float  # every gap of a request within it
    target: float  # share of requests that must meet both SLOs
    menu: tuple[str, ...]  # accelerator names the plan may use (ACCELERATORS, priced)
    link: str  # the fabric between prefill and decode (FABRICS)
    max_instances: int  # GPUs in all, at most


@dataclass(frozen=True)
class Plan:
    """A fleet: colocated (``prefill == 0``) or prefill:decode, each pool on one accelerator kind.

    ``decode`` instances of ``decode_hw`` stream the answers (colocated ones also prefill); ``prefill``
    instances of ``prefill_hw`` prefill remotely; prompts of at most ``threshold`` tokens are prefilled
    on decode itself (None: every prompt of a P/D fleet goes remote); ``budget`` is the decode (or
    colocated) instances' max_num_batched_tokens (None: vLLM's default for the device, 8192)."""

    decode_hw: str
    decode: int
    prefill_hw: str | None = None
    prefill: int = 0
    threshold: int | None = None
    budget: int | None = None

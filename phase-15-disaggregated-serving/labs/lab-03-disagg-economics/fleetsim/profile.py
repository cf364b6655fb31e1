"""Step-time profiles: how long one engine step takes, from what the step carries.

A step carries ``prefill_tokens`` prompt tokens (whole prompts or chunks), whose causal attention reads
``prefill_pairs`` (query, key) pairs in all (a chunk of c tokens starting at position s reads
c*s + c*(c+1)/2), plus ``decode_seqs`` running requests that each decode one token over
``decode_context`` cached tokens in all; ``joins`` requests finish their prefill in it and join the
running batch (first token sampled, their state set up). Every profile returns milliseconds for one step.

Two profiles:
- ``LinearProfile``: a fitted cost per unit of each of those four quantities plus a fixed per-step cost.
  The CPU pair's profile (``profiles/cpu-llama-200m/profile.json``) is one, fitted by
  ``lab-02-pd-pair/tools/calibrate_profile.py`` from the real pair's capture.
- ``RooflineProfile``: an analytic GPU step, max(compute time, memory time), from a model's parameter
  count and an accelerator's peak FLOP/s and HBM bandwidth at ASSUMED utilisations (see
  ``roofline_profile``; ``h100_profile`` is the H100 one).

Both also carry the fleet-independent fixed costs a request pays outside the engine
(``request_overhead_ms``: client -> engine and the first token back) and the pair's KV link
(``link_gbps``, ``link_latency_ms``), which a fleet may override with a real fabric.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def chunk_pairs(start: int, tokens: int) -> int:
    """Causal attention pairs of a chunk of ``tokens`` prompt tokens starting at position ``start``.
    Example: a whole 4-token prompt reads 1+2+3+4 = 10 pairs; its second half alone reads 3+4 = 7."""
    return tokens * start + tokens * (tokens + 1) // 2


@dataclass(frozen=True)
class LinearProfile:
    """step_ms = step_ms_fixed + each quantity x its cost (all ms), plus ``per_prefill_token_sq_ms`` x
    (the step's prefill tokens)^2: one large prefill step costs more per token than the same tokens in
    chunks (caches stop holding the activations). Example: fixed 25, 0.5 ms per decode sequence, 1 ms per
    prefill token, 5 ms per join -> a step with 4 decodes and one whole 32-token prompt = 64 ms."""

    name: str
    step_ms_fixed: float
    per_decode_seq_ms: float = 0.0
    per_decode_context_ms: float = 0.0
    per_prefill_token_ms: float = 0.0
    per_prefill_pair_ms: float = 0.0
    per_prefill_token_sq_ms: float = 0.0
    per_join_ms: float = 0.0
    step_jitter_sigma: float = 0.0  # steps vary: time x lognormal(0, sigma), seeded by the simulation
    request_overhead_ms: float = 0.0
    link_gbps: float | None = None  # None: the link's time is all in link_latency_ms
    link_latency_ms: float = 0.0
    kv_bytes_per_token: int = 0
    block_size: int = 16
    kv_blocks: int = 10**9
    max_num_seqs: int = 128  # vLLM 0.32.0's CPU default for the API server (see VLLM_DEFAULTS)
    max_num_batched_tokens: int = 2048  # the default token budget per step; a fleet may set its own
    source: dict = field(default_factory=dict)
    kind: str = "linear"

    def step_ms(self, prefill_tokens: int, prefill_pairs: int, decode_seqs: int, decode_context: int,
                joins: int = 0) -> float:  # fmt: skip
        return (
            self.step_ms_fixed
            + self.per_join_ms * joins
            + self.per_prefill_token_sq_ms * prefill_tokens * prefill_tokens
            + self.per_prefill_token_ms * prefill_tokens
            + self.per_prefill_pair_ms * prefill_pairs
            + self.per_decode_seq_ms * decode_seqs
            + self.per_decode_context_ms * decode_context
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


@dataclass(frozen=True)
class RooflineProfile:
    """An analytic accelerator step: max(FLOPs / (peak x MFU), bytes / (HBM x MBU)) + a fixed launch cost.

    FLOPs = 2 x params x (prefill tokens + decode seqs) + 2 x lm_head_params x (decode seqs + joins)
    + 2 x layers x 2 x attn_dim x (prefill pairs + decode context): every token through the weight
    matrices (``params``: the non-embedding ones; the embedding is a lookup), one set of logits per
    sampled token, and QK^T + AV at the attention's width (``attn_dim`` = heads x head_dim; 0: hidden).
    Bytes = the weights read once per step + the KV of every decode's context.
    Example (``h100_profile('llama-3-8b')``): a decode step of 32 sequences at 1k context each is memory
    bound at ~11 ms (15 GB of weights + 4.3 GB of KV); a whole 2048-token prompt is compute bound at ~62 ms.
    """

    name: str
    params: float
    layers: int
    hidden: int
    weight_bytes: float
    kv_bytes_per_token: int
    peak_flops: float
    hbm_bytes_per_s: float
    mfu: float
    mbu: float
    step_ms_fixed: float = 0.0
    step_jitter_sigma: float = 0.0
    request_overhead_ms: float = 0.0
    link_gbps: float | None = None
    link_latency_ms: float = 0.0
    block_size: int = 16
    kv_blocks: int = 10**9
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 8192
    source: dict = field(default_factory=dict)
    kind: str = "roofline"
    attn_dim: int = 0
    lm_head_params: float = 0.0

    def step_ms(self, prefill_tokens: int, prefill_pairs: int, decode_seqs: int, decode_context: int,
                joins: int = 0) -> float:  # fmt: skip
        width = self.attn_dim or self.hidden
        flops = (
            2 * self.params * (prefill_tokens + decode_seqs)
            + 2 * self.lm_head_params * (decode_seqs + joins)
            + 4 * self.layers * width * (prefill_pairs + decode_context)
        )
        nbytes = self.weight_bytes + self.kv_bytes_per_token * decode_context
        return self.step_ms_fixed + 1e3 * max(
            flops / (self.peak_flops * self.mfu), nbytes / (self.hbm_bytes_per_s * self.mbu)
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


# Accelerator figures come from lab-03's disagg.tables.ACCELERATORS (datasheet peaks: H100 SXM5 989 TFLOP/s
# dense BF16, 3.35 TB/s HBM3, 80 GB; A100 80GB SXM 312 TFLOP/s, 2.039 TB/s). Utilisations are ASSUMPTIONS,
# not measurements: MFU 0.5 for prefill-heavy steps is in the range Sarathi-Serve and DistServe report for
# large prefills; MBU 0.6 for decode is typical of vLLM-class decode kernels; 80% of HBM left for KV after
# the weights is vLLM's default gpu_memory_utilization of 0.9 minus activations. Change them with
# --mfu/--mbu in plan_fleet.py.
H100 = dict(peak_flops=989e12, hbm_bytes_per_s=3.35e12, hbm_bytes=80e9)
# vLLM 0.32.0's defaults for its OpenAI server (vllm/engine/arg_utils.py, the per-device defaults of
# max_num_batched_tokens / max_num_seqs): CPU 2048 tokens and 128 sequences; GPUs with >= 70 GiB
# (H100/H200-class and, by memory, an 80 GB A100) 8192 tokens and 1024 sequences.
VLLM_DEFAULTS = {"cpu": (2048, 128), "h100": (8192, 1024)}
H100_ASSUMED = dict(mfu=0.5, mbu=0.6, step_ms_fixed=2.0, request_overhead_ms=5.0, kv_fraction=0.8)


def roofline_profile(
    model: str = "llama-3-8b",
    accelerator: str = "h100-sxm",
    mfu: float | None = None,
    mbu: float | None = None,
) -> RooflineProfile:
    """One GPU (a name in lab-03's ACCELERATORS) serving ``model`` (a name in MODELS) in bf16 with bf16 KV."""
    from disagg.tables import ACCELERATORS, MODELS

    if model not in MODELS:
        raise ValueError(f"model: unknown {model!r}; known: {', '.join(MODELS)}")
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator: unknown {accelerator!r}; known: {', '.join(ACCELERATORS)}")
    m, acc = MODELS[model], ACCELERATORS[accelerator]
    if m.attention != "gqa" or not m.params_b or not m.vocab:
        raise ValueError(f"model: the roofline profile models sized GQA models only, not {model!r}")
    table = m.vocab * m.hidden
    lm_head = float(table)
    params = m.params_b * 1e9 - table * (1 if m.tied_embeddings else 2)
    kv_per_token = 2 * m.layers * m.kv_heads * m.head_dim * 2
    weight_bytes = (params + lm_head) * 2
    hbm = acc.hbm_gb * 1e9
    if weight_bytes >= hbm * H100_ASSUMED["kv_fraction"]:
        raise ValueError(f"model: {model} does not fit one {acc.hbm_gb:g} GB {accelerator} in bf16")
    kv_bytes = hbm * H100_ASSUMED["kv_fraction"] - weight_bytes
    block = 16
    return RooflineProfile(
        name=f"{accelerator.split('-')[0]}-{model}",
        params=params,
        layers=m.layers,
        hidden=m.hidden,
        weight_bytes=weight_bytes,
        kv_bytes_per_token=kv_per_token,
        peak_flops=acc.bf16_dense_tflops * 1e12,
        hbm_bytes_per_s=acc.hbm_tb_s * 1e12,
        mfu=H100_ASSUMED["mfu"] if mfu is None else mfu,
        mbu=H100_ASSUMED["mbu"] if mbu is None else mbu,
        step_ms_fixed=H100_ASSUMED["step_ms_fixed"],
        request_overhead_ms=H100_ASSUMED["request_overhead_ms"],
        link_gbps=200.0,  # InfiniBand HDR, lab-03's FABRICS["ib-hdr"]; a fleet may set its own
        link_latency_ms=1.0,
        block_size=block,
        kv_blocks=int(kv_bytes // (kv_per_token * block)),
        max_num_batched_tokens=VLLM_DEFAULTS["h100"][0],
        max_num_seqs=VLLM_DEFAULTS["h100"][1],
        attn_dim=m.heads * m.head_dim,
        lm_head_params=lm_head,
        source={"hardware": acc.source, "assumed": H100_ASSUMED},
    )


def h100_profile(
    model: str = "llama-3-8b", mfu: float | None = None, mbu: float | None = None
) -> RooflineProfile:
    """One H100 SXM serving ``model`` (``roofline_profile(model, "h100-sxm")``)."""
    return roofline_profile(model, "h100-sxm", mfu, mbu)


def load_profile(path: str | Path) -> LinearProfile | RooflineProfile:
    """A profile from its JSON (``kind`` picks the class); a clear ValueError for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / "profile.json"
    if not path.is_file():
        raise ValueError(f"profile: no file at {path}")
    data = json.loads(path.read_text())
    kind = data.get("kind")
    cls = {"linear": LinearProfile, "roofline": RooflineProfile}.get(kind)
    if cls is None:
        raise ValueError(f"profile: {path} has kind {kind!r}; expected 'linear' or 'roofline'")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ValueError(f"profile: {path} does not match {cls.__name__}: {exc}") from None


def cpu_profile() -> LinearProfile:
    """The CPU pair's calibrated profile (llama-200m, one core per instance)."""
    return load_profile(PROFILES_DIR / "cpu-llama-200m" / "profile.json")

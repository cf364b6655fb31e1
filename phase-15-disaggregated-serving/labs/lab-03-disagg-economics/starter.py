# STARTER FILE - your work goes here. Replace each `raise NotImplementedError(...)` with code that
# meets the docstring above it, then grade yourself: see this lab's README ('How to grade').
# (Instructors: generated from solution.py by `make starters`; edit solution.py, not this file.)
"""Lab 03 - the economics of disaggregation, in five functions.

Disaggregating prefill from decode cures one disease - the decode ITL spike when a prefill lands in a
decode batch - and charges one toll: the prompt's KV cache must cross a wire before decode can start.
These five functions price both sides and decide.

Units: bytes are bytes; link rates are gigaBITS per second (Gb/s, 1e9 bit/s) as vendors quote them;
times are milliseconds. The tables (model shapes, fabrics) and the types (ModelShape, Fabric, Verdict,
Decision) are given in disagg_tables.py.
"""

from __future__ import annotations

from disagg_tables import FABRICS, MODELS, Decision, Fabric, ModelShape, Verdict

DEFAULT_MAX_PENALTY = 0.10  # the toll may add at most 10% to colocated TTFT (the phase's "+10%")
DEFAULT_MIN_SPIKE_RATIO = 1.5  # ITL p99 / p50 at or above this = an interference spike worth curing


def resolve_model(model: ModelShape | str) -> ModelShape:
    """A ModelShape, or one looked up by name in MODELS (ValueError naming `model` if unknown)."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, str) and model.lower() in MODELS:
        return MODELS[model.lower()]
    raise ValueError(f"model: unknown model {model!r}; known: {', '.join(MODELS)}")


def resolve_link_gbps(link: float | int | str | Fabric) -> float:
    """Gb/s from a number, a Fabric, or a fabric name in FABRICS (ValueError naming `link_gbps`)."""
    if isinstance(link, Fabric):
        return float(link.gbps)
    if isinstance(link, str):
        if link.lower() not in FABRICS:
            raise ValueError(f"link_gbps: unknown fabric {link!r}; known: {', '.join(FABRICS)}")
        return float(FABRICS[link.lower()].gbps)
    if isinstance(link, bool) or not isinstance(link, int | float):
        raise ValueError(f"link_gbps: expected Gb/s as a number or a fabric name, got {link!r}")
    return float(link)


def kv_bytes_per_token(model: ModelShape | str, dtype_bytes: int = 2) -> int:
    """Bytes of KV cache one token occupies (and must ship), across all layers.

    GQA/MHA:  2 (K and V) x layers x kv_heads x head_dim x dtype_bytes
    MLA:      layers x (mla_latent_dim + mla_rope_dim) x dtype_bytes   (one shared latent: no factor 2)

    `model` is a ModelShape or a name in MODELS; `dtype_bytes` is 2 for fp16/bf16, 1 for fp8.
    Invariants the tests check: Llama-3-8B fp16 = 131,072 bytes (128 KiB); fp8 halves it exactly;
    DeepSeek-V3 (MLA) fp16 = 70,272 bytes. Raises ValueError naming `model` or `dtype_bytes`.
    """
    raise NotImplementedError("lab-03 task 1: count K and V for GQA models, one latent per layer for MLA models")


def transfer_ms(nbytes: int | float, link_gbps: float | str | Fabric, efficiency: float = 1.0) -> float:
    """Milliseconds to move `nbytes` over a link of `link_gbps` gigaBITS/s at `efficiency` of line rate.

    ms = nbytes x 8 / (link_gbps x 1e9 x efficiency) x 1000.  `link_gbps` may also be a fabric name
    ("ib-hdr", "10gbe", ...). Pinned: 256 MiB over 200 Gb/s IB HDR = 10.74 ms; over 10 GbE = 214.7 ms.
    Raises ValueError naming the argument for negative bytes, bandwidth <= 0, an unknown fabric, or
    efficiency outside (0, 1].
    """
    raise NotImplementedError("lab-03 task 2: convert bytes to bits and divide by the link's bit rate")


def interference_tax_ms(output_tokens: int, itl_p50_ms: float, itl_p99_ms: float) -> float:
    """The per-token tax colocated decode pays, summed over one request's inter-token gaps.

    When prefills share a batch with decodes, some decode steps stall: ITL p99 rises far above p50
    (the phase's figure: 38 ms vs 12 ms). A deployment held to an ITL-p99 SLO must plan every gap at
    p99, so each gap carries a budgeted tax of (p99 - p50) - an upper bound for capacity planning, not
    the latency every request sees. The first output token comes from prefill, so a request with N
    output tokens has N - 1 gaps:  tax = max(N - 1, 0) x (p99 - p50).
    Compare it with the toll (transfer_ms), paid ONCE per request: the tax -> toll trade.
    Raises ValueError naming the argument for negative tokens/latencies or p99 < p50.
    """
    raise NotImplementedError("lab-03 task 3: (p99 - p50) per gap, over output_tokens - 1 gaps")


def penalty_ratio(transfer_ms: float, ttft_ms: float) -> float:
    """The qualifying number: the toll as a fraction of colocated TTFT (0.05 = TTFT +5%).

    Raises ValueError naming the argument for transfer_ms < 0 or ttft_ms <= 0.
    """
    raise NotImplementedError("lab-03 task 4: the toll divided by the colocated TTFT")


def should_disaggregate(
    model: ModelShape | str,
    prompt_tokens: int,
    output_tokens: int,
    link_gbps: float | str | Fabric,
    ttft_ms: float,
    itl_p50_ms: float,
    itl_p99_ms: float,
    *,
    kv_dtype_bytes: int = 2,
    efficiency: float = 1.0,
    max_penalty: float = DEFAULT_MAX_PENALTY,
    min_spike_ratio: float = DEFAULT_MIN_SPIKE_RATIO,
) -> Decision:
    """Decide, from colocated measurements, whether to split prefill from decode.

    1. No disease: if colocated ITL p99 / p50 < min_spike_ratio there is no interference spike to
       cure -> NO_NO_DISEASE, whatever the wire.
    2. Slow link: freight = prompt_tokens x kv_bytes_per_token; toll = transfer_ms(freight, link);
       if toll / ttft_ms > max_penalty -> NO_SLOW_LINK.
    3. Otherwise YES.
    Edges are inclusive: a spike ratio EQUAL to min_spike_ratio is a disease; a penalty EQUAL to
    max_penalty is acceptable. Returns a Decision with every intermediate number.
    Pinned: Llama-3-8B, 2048-token prompt, TTFT 200 ms, ITL p50/p99 12/38 ms -> YES on ib-hdr,
    NO_SLOW_LINK on 10gbe; p99 13 ms -> NO_NO_DISEASE. Raises ValueError naming bad arguments.
    """
    raise NotImplementedError("lab-03 task 5: no spike -> NO_NO_DISEASE; toll/TTFT over the limit -> NO_SLOW_LINK; else YES")

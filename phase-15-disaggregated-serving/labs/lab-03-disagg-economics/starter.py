# STARTER FILE - your work goes here. Replace each `raise NotImplementedError(...)` with code that
# meets the docstring above it, then grade yourself: see this lab's README ('How to grade').
# (Instructors: generated from solution.py by `make starters`; edit solution.py, not this file.)
"""Lab 03 - the economics of disaggregation.

Part 1 (tasks 1-9), one request: the trade. Disaggregating prefill from decode ships each prompt's KV
cache over a wire (the FREIGHT, task 1; the WIRE, tasks 2-3) and so spares the decodes that would
have shared steps with the prefill their stall (the TAX, tasks 4-5); the toll is judged against the
TTFT it is added to (the PENALTY: task 6 the TTFT, task 7 the wire a penalty limit asks for) and the
VERDICT weighs both sides (tasks 8-9).
Part 2 (tasks 10-14), a fleet: SLO attainment, goodput, the choice of configuration, the
prefill:decode ratio and the cost of mixing hardware. Part 3 (task 15): plan a fleet, scored by the
serving twin.

Units: bytes are bytes; link rates are gigaBITS per second (Gb/s, 1e9 bit/s) as vendors quote them;
times are milliseconds; rates of requests are requests per second (req/s); prices are dollars.
The tables and types (ModelShape, Fabric, Accelerator, StepModel, ...) are in disagg/tables.py.

Bad input, in every function, one rule: a bool, a string or None where a number belongs, or a
float where a count belongs (2048.0 tokens), is a TypeError (any integer type is a count, numpy's
too); NaN, infinity or a value out of range is a ValueError. Either way the message starts with the
name of the argument of the function that was called and a colon ("ttft_ms: ..."; task 8's
kv_dtype_bytes is "kv_dtype_bytes", though task 1 calls it dtype_bytes). A field of an object passed
in (a StepSample's step_ms, an Offer's price, a Stall's numbers) follows the same rule and the message
names the argument that carries it ("samples: ..."). Every argument is checked before any result is
returned (a shortcut such as "0 bytes take 0 ms" comes after validation, never before). When several
arguments are bad, naming any one of them is right. No function changes the lists or dicts it is
given. `number` below does the type and finiteness half for you.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from disagg.tables import (
    ACCELERATORS,
    FABRICS,
    MODELS,
    Accelerator,
    Capacity,
    Decision,
    Fabric,
    FleetCost,
    ModelShape,
    Offer,
    Plan,
    Scenario,
    Stall,
    StepModel,
    StepSample,
    Verdict,
)

DEFAULT_MAX_PENALTY = 0.10  # the toll may add at most 10% to colocated TTFT (the phase's "+10%")
DEFAULT_MIN_SPIKE_RATIO = 1.5  # a stalled gap at least 1.5x the steady gap = an interference spike


def number(name: str, value, *, integer: bool = False) -> float | int:
    """`value` if it is a finite real number (an int when `integer`), else an error naming `name`.

    bool and non-numbers -> TypeError; NaN and +-inf -> ValueError; with integer=True a float (even
    2048.0) -> TypeError. Range checks (> 0, <= 1 ...) are the caller's: they depend on the meaning.
    Example: number("ttft_ms", float("nan")) raises ValueError("ttft_ms: must be finite, got nan").
    """
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name}: must be {kind}, got {type(value).__name__} {value!r}")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return int(value) if integer else value


def resolve_model(model: ModelShape | str) -> ModelShape:
    """A ModelShape, or one looked up by name in MODELS (errors name `model`)."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, str):
        if model.lower() in MODELS:
            return MODELS[model.lower()]
        raise ValueError(f"model: unknown model {model!r}; known: {', '.join(MODELS)}")
    raise TypeError(f"model: expected a ModelShape or a model name, got {type(model).__name__}")


def resolve_link_gbps(link: float | int | str | Fabric) -> float:
    """Gb/s from a number, a Fabric, or a fabric name in FABRICS (errors name `link_gbps`).

    Only the lookup and type/finiteness: whether the rate is > 0 is the caller's check.
    """
    if isinstance(link, Fabric):
        return float(number("link_gbps", link.gbps))
    if isinstance(link, str):
        if link.lower() not in FABRICS:
            raise ValueError(f"link_gbps: unknown fabric {link!r}; known: {', '.join(FABRICS)}")
        return float(FABRICS[link.lower()].gbps)
    return float(number("link_gbps", link))


def resolve_peak_tflops(peak: float | int | str | Accelerator) -> float:
    """Peak dense TFLOP/s from a number, an Accelerator, or a name in ACCELERATORS (errors name `peak_tflops`)."""
    if isinstance(peak, Accelerator):
        return float(number("peak_tflops", peak.bf16_dense_tflops))
    if isinstance(peak, str):
        if peak.lower() not in ACCELERATORS:
            raise ValueError(f"peak_tflops: unknown accelerator {peak!r}; known: {', '.join(ACCELERATORS)}")
        return float(ACCELERATORS[peak.lower()].bf16_dense_tflops)
    return float(number("peak_tflops", peak))


def causal_pairs(start: int, tokens: int) -> int:
    """(query, key) pairs that `tokens` prompt tokens at positions start .. start + tokens - 1 score in
    causal attention, each against itself and every earlier position. Example: causal_pairs(0, 4) = 10
    (1 + 2 + 3 + 4); the second half of that prompt alone, causal_pairs(2, 2) = 3 + 4 = 7."""
    return tokens * start + tokens * (tokens + 1) // 2


# ================================================================ part 1: one request, the trade
# ---------------------------------------------------------------- the freight


def kv_freight_bytes(
    model: ModelShape | str,
    prompt_tokens: int,
    *,
    dtype_bytes: int | float = 2,
    block_size: int = 1,
    cached_tokens: int = 0,
    tp: int = 1,
) -> int:
    """Bytes of a prompt's KV cache that ONE tensor-parallel rank of the decode instance must receive.

    Everything the attention of later tokens will read about the prompt's tokens, in every layer, kept
    at `dtype_bytes` per element (2: fp16/bf16, 1: fp8, 0.5: a 4-bit cache). The decode instance:
      * holds the first `cached_tokens` tokens of this prompt in its prefix cache already, but caches
        only WHOLE blocks: a partly filled block is not a hit and must be shipped;
      * receives KV in whole blocks of `block_size` tokens: a last block that is partly filled moves
        whole (it is allocated whole), as vLLM's NIXL connector reads it;
      * runs `tp` tensor-parallel ranks, each holding the share of every layer's KV that vLLM 0.32
        gives it - read how: vllm/model_executor/layers/linear.py (QKVParallelLinear, also when there
        are more ranks than KV heads) and vllm/config/model.py (get_num_kv_heads, the MLA case).
        vLLM refuses a tp that neither divides the KV heads nor is a multiple of them: so does this
        function (ValueError naming `tp`); an MLA model takes any tp.
    A total that is not a whole number of bytes (a 4-bit cache of an odd element count) is rounded UP.
    Edges: prompt_tokens >= 0; 0 <= cached_tokens <= prompt_tokens; block_size >= 1; tp >= 1;
    dtype_bytes > 0; counts are integers (any integer type: numpy's too).
    Sanity anchor: Llama-3-8B, 2048 tokens, fp16, block 1, tp 1 -> 268,435,456 B (256 MiB).
    """
    raise NotImplementedError("lab-03 task 1: the bytes of this prompt's KV that one decode rank must receive")


# ---------------------------------------------------------------- the wire


def transfer_ms(
    nbytes: int | float, link_gbps: float | str | Fabric, efficiency: float = 1.0, *, links: int = 1
) -> float:
    """Milliseconds the wire needs to move `nbytes` bytes once prefill is done: the serialized toll.

    `link_gbps` is one link's line rate in gigaBITS per second, a Fabric, or a fabric name ("ib-hdr",
    "10gbe", ...); `efficiency` in (0, 1] is the fraction of line rate each link achieves (0.5: the
    copy runs at half the quoted rate); the bytes are spread evenly over `links` identical links that
    run in parallel (tensor-parallel ranks reading over their own NICs). Zero bytes take 0 ms.
    Edges: nbytes >= 0; rate > 0; an unknown fabric is a ValueError; efficiency in (0, 1]; links an
    integer >= 1. Every argument is checked, also when there is nothing to move.
    Sanity anchor: 256 MiB over one InfiniBand HDR link (200 Gb/s) at full rate = 10.74 ms.
    """
    raise NotImplementedError("lab-03 task 2: how long the links take to move nbytes, in milliseconds")


def exposed_toll_ms(
    nbytes: int | float,
    link_gbps: float | str | Fabric,
    prefill_ms: float,
    layers: int,
    *,
    efficiency: float = 1.0,
    links: int = 1,
) -> float:
    """The toll decode still waits for when KV streams layer by layer WHILE prefill runs (Splitwise,
    Mooncake): milliseconds from the end of prefill until the last layer's KV has landed.

    The model (the lab's; state it when you quote a number): prefill computes `layers` layers one after
    another, each in prefill_ms / layers; the KV of a layer, nbytes / layers, may start crossing the
    wire the moment its layer is computed; the wire (the `links`, `efficiency` and rate of task 2)
    carries one layer's KV at a time, in layer order, and never idles while a computed layer waits.
    Decode can start when the last layer's KV has landed.
    Edges: the validation of task 2, plus prefill_ms >= 0 and layers an integer >= 1. With nothing to
    overlap (prefill_ms 0, or one layer) the whole serialized toll is exposed; zero bytes expose 0 ms.
    Sanity anchor: Llama-3-8B's 2048-token freight (256 MiB, 32 layers) on IB HDR under a 55 ms
    prefill: ~0.34 ms exposed, against 10.74 ms serialized.
    """
    raise NotImplementedError("lab-03 task 3: when does the last layer land, counted from the end of prefill?")


# ---------------------------------------------------------------- the tax: the stall colocation charges


def fit_step_model(samples) -> StepModel:
    """A step-time model fitted to measured engine steps: how a step's time grows with what it carries.

    `samples` is an iterable of StepSample (disagg/tables.py; disagg.steps.capture_steps() reads them
    off lab-02's signature capture). Return the StepModel (a fixed cost per step, a cost per decoding
    sequence, per prompt token and per attention pair, all in ms) whose predicted step times are
    closest to the measured ones in the least-squares sense AMONG MODELS WITH NO NEGATIVE COST - the
    fixed cost included: carrying more never makes a step faster, and an empty step never takes less
    than no time; a negative fitted cost is noise. That is one well-defined optimum (it is not what
    you get by clipping an unconstrained fit's negative terms to 0); any method that reaches it is
    fine, numpy is installed. A term the samples never exercise (its quantity is 0 in every sample)
    is 0. The tests check the optimum by its optimality conditions, not by your method.
    Edges: no samples -> ValueError naming `samples`; an item that is not a StepSample -> TypeError
    naming `samples`; a field that breaks the module's rule -> the rule's error, naming `samples`: a
    step_ms that is not a number (NaN, a str, ...) or is below 0, a count (prefill_tokens,
    prefill_pairs, decode_seqs) that is not an integer (1.5, NaN) or is below 0. A step measured at
    0 ms is valid. The samples are not
    changed or reordered.
    Sanity anchor: on run 1 of the capture the fixed cost comes out ~14 ms on one CPU core and a
    prompt token costs ~0.55 ms; run 2, recorded separately, is what the tests hold it to.
    """
    raise NotImplementedError("lab-03 task 4: the model that best fits the measured steps")


def prefill_stall(step, prompt_tokens: int, decode_batch: int, *, token_budget: int | None = None,
                  decode_context: int = 0) -> Stall:  # fmt: skip
    """What one prompt's prefill costs the `decode_batch` running requests whose steps it shares.

    `step` is a step-time model: anything with step_ms(prefill_tokens, prefill_pairs, decode_seqs,
    decode_context) in ms - task 4's StepModel, or a fleetsim profile (fleetsim.profile.cpu_profile(),
    h100_profile()). vLLM's order (vllm/v1/core/sched/scheduler.py): every step first gives each
    running request its one decode token, and the rest of the step's `token_budget` (vLLM's
    max_num_batched_tokens, which counts those decode tokens too) goes to the prompt, in order, a
    chunk per step; None means no budget limit: the whole prompt rides one step. A step's prompt
    tokens attend causally to themselves and every earlier prompt position (`causal_pairs`). The
    decodes' cached context is `decode_context` tokens in all, the same in every step (the lab's
    simplification). Returns Stall(per_decode_ms, worst_gap_ms), ms:
      per_decode_ms - how much longer each running request waits in all, over the steps that carry
        the prompt, than it would have without the prompt;
      worst_gap_ms - the longest single step (= inter-token gap) a running request sees meanwhile.
    Edges: prompt_tokens >= 0 (0: no stall, the worst gap is a plain step); decode_batch >= 1;
    token_budget None or an integer > decode_batch (no room for the prompt otherwise);
    decode_context >= 0; all integers.
    Sanity anchor: on the CPU pair's calibrated profile, 5 decodes and a whole 1500-token prompt stall
    each decode ~1.2 s; a 64-token budget bounds the worst gap to ~79 ms (lab-02's capture: ~1.25 s
    whole-prompt steps, ~69 ms ITL p99 with chunks of 64).
    """
    raise NotImplementedError("lab-03 task 5: what the steps that carry the prompt cost the running decodes")


# ---------------------------------------------------------------- the penalty: the TTFT the toll is added to


def prefill_ttft_ms(
    model: ModelShape | str, prompt_tokens: int, peak_tflops: float | str | Accelerator, mfu: float
) -> float:
    """The compute floor of colocated TTFT: the prefill's FLOPs at `mfu` of the chip's peak.

    Count what a prefill computes as matrix products, a multiply-add being 2 FLOPs: every prompt token
    through every weight matrix it passes (ModelShape: params_b is the published count - embedding
    and output head included; for a mixture of experts, the parameters ACTIVATED per token), causal
    attention in every layer (each token's query against its own key and every earlier one, and the
    same pairs weighting the values, at the attention's own dimensions - ModelShape says what they are
    for GQA and for MLA), and the logits of the LAST prompt position only (the first output token is
    sampled from it). Not counted: norms, softmax, activations, RoPE, the embedding lookup.
    The chip delivers `mfu` (model FLOPs utilisation, in (0, 1]) of `peak_tflops` (dense TFLOP/s: a
    number, an Accelerator, or a name in ACCELERATORS). Queueing, the network and the decode step are
    not in it.
    Edges: 0 tokens -> 0 ms; prompt_tokens an integer >= 0; peak > 0 (unknown name: ValueError naming
    `peak_tflops`); mfu in (0, 1]; a model missing what the count needs (params_b, heads, hidden or
    vocab is 0) -> ValueError naming `model`.
    Sanity anchor: Llama-3-8B x 2048 tokens is ~2.97e13 FLOPs counted from its config (the 2N FLOPs per
    token of Kaplan et al. 2020 are most of it): ~60 ms on an H100 (989 TFLOP/s dense bf16) at 50% MFU.
    """
    raise NotImplementedError("lab-03 task 6: the prefill's FLOPs at the chip's delivered rate")


def penalty_ratio(toll_ms: float, ttft_ms: float) -> float:
    """The toll as a fraction of the colocated TTFT it is added to (0.05 = TTFT grows 5%). Given.

    toll_ms >= 0 (0 is valid); ttft_ms > 0 (it is what the toll is measured against). Example:
    penalty_ratio(10.7, 200.0) = 0.0535.
    """
    if number("toll_ms", toll_ms) < 0:
        raise ValueError(f"toll_ms: must be >= 0, got {toll_ms!r}")
    if number("ttft_ms", ttft_ms) <= 0:
        raise ValueError(f"ttft_ms: must be > 0, got {ttft_ms!r}")
    return toll_ms / ttft_ms


def breakeven_gbps(
    nbytes: int | float,
    ttft_ms: float,
    *,
    layers: int = 1,
    max_penalty: float = DEFAULT_MAX_PENALTY,
    efficiency: float = 1.0,
    links: int = 1,
) -> float | None:
    """How fast must the wire be? The slowest line rate, in Gb/s per link, at which shipping a prompt's
    `nbytes` of KV costs its request at most `max_penalty` of its colocated TTFT `ttft_ms`.

    The toll is the one tasks 2-3 define for a link of that rate at `efficiency`, over `links` links in
    parallel: `layers` 1 is the serialized transfer after prefill; `layers` > 1 is what is still
    exposed when the KV streams layer by layer under a prefill that takes the whole `ttft_ms` (task 3's
    model, through that many layers). Return the rate at which penalty_ratio(toll, ttft_ms) is exactly
    `max_penalty`: every faster link keeps the toll within the limit, every slower one breaks it.
    Edges: zero bytes -> 0.0 (any link will do); max_penalty 0 with bytes to move -> None (no link is
    fast enough). nbytes >= 0; ttft_ms > 0; layers an integer >= 1; max_penalty >= 0; efficiency in
    (0, 1]; links an integer >= 1. Every argument is checked, also when there is nothing to move.
    Sanity anchor: Llama-3-8B's 2048-token freight (256 MiB) under a 200 ms TTFT, 10% limit: ~107 Gb/s
    serialized; streamed through its 32 layers, about a tenth of that.
    """
    raise NotImplementedError("lab-03 task 7: the line rate at which the toll is exactly the limit")


# ---------------------------------------------------------------- the verdict


def should_disaggregate(
    model: ModelShape | str,
    prompt_tokens: int,
    link_gbps: float | str | Fabric,
    ttft_ms: float,
    itl_ms: float,
    stall: Stall,
    decode_batch: int,
    *,
    kv_dtype_bytes: int | float = 2,
    efficiency: float = 1.0,
    layerwise: bool = False,
    max_penalty: float = DEFAULT_MAX_PENALTY,
    min_spike_ratio: float = DEFAULT_MIN_SPIKE_RATIO,
) -> Decision:
    """Should this prompt be prefilled remotely? Decide from both sides of the trade, and say why.

    Remote, THIS request pays a toll: its prompt's KV (all of it, at `kv_dtype_bytes`: block 1, nothing
    cached, tp 1) crosses `link_gbps` at `efficiency` once its prefill is done - or, with `layerwise`,
    streams layer by layer under a prefill that lasts its colocated TTFT `ttft_ms` - and what the wire
    has not finished when prefill ends is added to its TTFT. Colocated, its prefill rides the steps of
    `decode_batch` running requests whose steady gap is `itl_ms`, and `stall` (task 5) says what that
    costs each of them; remote, it costs them nothing.
    The rules, in order - the first that applies decides:
      * no disease -> NO_NO_DISEASE, however good the wire: no decode is running, or the prefill does
        not stretch a running decode's gap to at least `min_spike_ratio` times its steady gap;
      * a cheap toll -> YES: the toll is at most `max_penalty` of `ttft_ms` (penalty_ratio);
      * the cure outweighs the toll -> YES: the waiting that going remote spares the running requests,
        all of them together, is at least the waiting it adds to this one (its whole toll, not the part
        above the allowance) - request-milliseconds on both sides (the lab's rule; real routers weigh
        SLOs, lab-02 task 4);
      * otherwise NO_SLOW_LINK.
    Edges are inclusive: a stretch EQUAL to min_spike_ratio is a disease, a penalty EQUAL to
    max_penalty is acceptable, waiting spared EQUAL to the toll pays. The Decision carries every number
    whatever the verdict: the freight, the toll, the penalty, the stretch (spike_ratio) and the waiting
    spared (spared_ms, request-ms). `reason` is one line that contains the deciding measurement as
    printed here: the spike ratio with two decimals ("1.08") for NO_NO_DISEASE; the penalty as a
    percentage with one decimal ("107.4%") for YES and NO_SLOW_LINK; and for a YES the penalty rule
    would refuse, also the spared delay in whole ms ("3,328 ms" or "3328 ms"). Other wording is yours.
    Edges of the inputs: ttft_ms > 0; itl_ms > 0; stall a Stall with per_decode_ms >= 0 and
    worst_gap_ms >= itl_ms (errors name `stall`); decode_batch an integer >= 0; layerwise a bool (else
    TypeError); kv_dtype_bytes > 0; max_penalty >= 0; min_spike_ratio >= 1; model, prompt_tokens,
    link_gbps and efficiency as in tasks 1-2. Errors name THIS function's arguments (`kv_dtype_bytes`,
    `ttft_ms`), whichever task you hand them to.
    Sanity anchor: Llama-3-8B, 2048 tokens, TTFT 200 ms, steady gap 12 ms, Stall(26, 38), 4 decodes:
    YES on ib-hdr (penalty 5.4%), NO_SLOW_LINK on 10gbe (107.4%).
    """
    raise NotImplementedError("lab-03 task 8: is there a disease? is the toll cheap? does the cure outweigh it?")


def local_prefill_max_tokens(
    model: ModelShape | str,
    link_gbps: float | str | Fabric,
    prefill_tokens_per_s: float,
    handoff_ms: float,
    *,
    kv_dtype_bytes: int | float = 2,
    efficiency: float = 1.0,
    max_penalty: float = DEFAULT_MAX_PENALTY,
) -> int | None:
    """The conditional-disaggregation knob: the longest prompt that should stay on the decode worker.

    Real routers prefill short prompts locally and send long ones to a prefill pool (NVIDIA Dynamo's
    max_local_prefill_length, lab-02's local_prefill_max_tokens: prompts of MORE tokens go remote).
    Pick that value by the penalty rule of task 8 alone. Colocated, an n-token prompt's TTFT is its
    prefill at `prefill_tokens_per_s`. Remote, it pays a toll: a fixed `handoff_ms` per request (the
    extra hop, decode's wait for a step, its own first step - what your measurements show) plus the
    serialized wire time of n tokens' KV at `kv_dtype_bytes` and `efficiency` (tasks 1-2). The
    threshold is a question about rates, so a token's KV counts at its exact size: a 4-bit cache of an
    odd element count is a fractional number of bytes per token, and n tokens cost n times that.
    Remote PAYS for a prompt when its toll is at most `max_penalty` of its colocated TTFT. A tie pays:
    a toll equal to the limit in exact arithmetic on the numbers as written (0.29 is a tie where
    0.29 x n says so, though 0.29 is no binary fraction) - in floating point, a toll within a relative
    1e-9 of the limit is a tie.
    Returns the largest n for which remote does not pay - every longer prompt pays; 0 when every prompt
    pays; None when no prompt length ever pays on this wire (send nothing remote by this rule).
    Edges: prefill_tokens_per_s > 0, handoff_ms >= 0, max_penalty >= 0 (0 is a valid limit),
    kv_dtype_bytes > 0 (errors name `kv_dtype_bytes`), and the model/link/efficiency errors of tasks
    1-2.
    Sanity anchor: Llama-3-8B fp16 on ib-hdr, 10,000 prompt tokens/s, 5 ms handoff, 10% -> about a
    thousand tokens stay local; on 100gbe -> None.
    """
    raise NotImplementedError("lab-03 task 9: the longest prompt for which remote prefill does not pay")


# ================================================================ part 2: a fleet, not one request
# Tasks 10-12 turn simulated (or measured) runs into a decision. The records are lab-02's capture
# records (labkit.capture.RequestRecord: status, sent_s, arrivals_s in seconds, error), which the
# serving twin in fleetsim/ writes for simulated runs too; plan_fleet.py calls these functions.

GAP_RULES = ("worst", "mean")


def slo_attainment(records, ttft_slo_ms: float, itl_slo_ms: float, *, gap_rule: str = "worst") -> float:
    """The fraction of requests that met BOTH SLOs, in [0, 1].

    A request meets them when it succeeded - status exactly 200 (no other code), at least one token,
    and no error (`error` is None; any string, even an empty one, is an error) - its TTFT (first
    token's arrival - sent, both in seconds) is at most `ttft_slo_ms`, and its inter-token time is at
    most `itl_slo_ms`, judged by `gap_rule`:
      "worst" (this lab's default): its slowest gap between consecutive tokens - a stall the mean hides;
      "mean": DistServe's TPOT (OSDI'24, section 2): the average time per output token after the
        first.
    A one-token answer has no gap and meets the ITL SLO under either rule. Edges are inclusive (a TTFT
    exactly at the SLO meets it). A failed request is a miss: it counts in the denominator.
    Edges of the inputs: no records -> `records` (ValueError); SLOs > 0; gap_rule one of GAP_RULES
    (ValueError naming `gap_rule`). `records` may be any iterable; it is not changed.
    Sanity anchor: 4 requests - one fine, one with a 600 ms TTFT, one with a single 150 ms stall among
    20 ms gaps, one failed - against 500 ms / 100 ms SLOs -> 0.25 ("worst"), 0.5 ("mean").
    """
    raise NotImplementedError("lab-03 task 10: the share of requests that met both SLOs")


def goodput(rates: list[float], attainments: list[float], target: float = 0.9) -> float:
    """Goodput from a sweep: the highest request rate (req/s) at which at least `target` of requests
    meet the SLOs - DistServe's definition (OSDI'24), which then divides by the GPUs to compare
    fleets of different sizes; this one is the whole fleet's (divide yourself when you compare).

    `rates` are the swept rates, strictly increasing and > 0; `attainments[i]` is the attainment
    measured at `rates[i]` (task 10), in [0, 1]. The good region ends at the lowest rate whose
    attainment is BELOW `target` (an attainment equal to `target` is good); what the sweep shows after
    it is ignored, even a recovery (noise, not capacity). Between that rate and the good point before
    it, take attainment to change linearly with the rate.
    Edges: the lowest rate already bad -> 0.0 (nothing was shown to be good); no rate bad -> the
    highest rate swept (never extrapolate beyond what was simulated); target in (0, 1] (1.0 is valid).
    Errors (ValueError, naming the argument): empty or different lengths -> `attainments`; a rate that
    is not a finite number > 0, or rates not strictly increasing -> `rates` (a bool is a TypeError);
    an attainment outside [0, 1] -> `attainments`; target outside (0, 1] -> `target`. Every point is
    checked, the ignored ones after the first miss included: a bad sweep is refused, whatever its
    answer would have been. The lists are not changed.
    Sanity anchor: rates [1, 2, 3, 4], attainments [1.0, 0.95, 0.85, 0.5], target 0.9 -> 2.5.
    """
    raise NotImplementedError("lab-03 task 11: the highest rate the sweep shows good, interpolated")


def choose_config(goodputs: dict[str, float], baseline: str, min_gain: float = 0.05, *,
                  gpus: dict[str, int] | None = None) -> str:  # fmt: skip
    """Which configuration to deploy, from each one's goodput (req/s of the whole fleet, task 11).

    The `baseline` (the colocated fleet you run today) stays unless another configuration beats it by
    MORE than `min_gain` (a fraction: 0.05 = 5%): splitting prefill from decode adds moving parts and a
    KV link, and a win inside the simulator's noise is not a win. Among those that beat it, the best
    wins; a tie goes to the one listed first. A baseline of 0 is beaten by anything above 0.
    Fleets of different sizes: with `gpus` (configuration -> GPUs it uses) configurations are compared
    by goodput PER GPU, as DistServe (OSDI'24) compares them; without it, by the fleet's goodput.
    Errors (ValueError, naming the argument): baseline not in goodputs -> `baseline`; a goodput that is
    negative or not finite (an infinite goodput is a broken measurement, not a winner) -> `goodputs`;
    min_gain < 0 -> `min_gain` (0 is valid); with gpus, a configuration missing from it (the baseline
    too: it has no default size) or a count below 1 -> `gpus`. Nothing it is given is changed.
    Sanity anchor: DistServe's Figure 1 - one colocated GPU at 1.6 req/s against 2 prefill + 1 decode
    GPUs at 10 req/s: per GPU the split wins ~2.1x.
    """
    raise NotImplementedError("lab-03 task 12: keep the baseline unless something beats it by more than min_gain; then the best")


def pd_capacity(
    step,
    prompt_tokens: int,
    output_tokens: int,
    ttft_slo_ms: float,
    itl_slo_ms: float,
    instances: int,
    *,
    max_batch: int = 256,
) -> Capacity:
    """How many requests/s one prefill instance and one decode instance serve within the SLOs, and the
    best split of `instances` between the two roles - analytically, before any simulation.

    `step` is a step-time model as in task 5 (a StepModel, a fleetsim profile, or any step model whose
    step never takes less time when it carries more - its cost may grow faster than the batch). Every
    request has a `prompt_tokens` prompt and an `output_tokens` answer. The lab's model, stated:
      * a prefill instance runs one whole prompt per step, first come first served, with Poisson
        arrivals: an M/D/1 queue (DistServe, OSDI'24, section 3.1). Its capacity is the highest arrival
        rate at which the MEAN TTFT (wait + the prompt's step) is at most `ttft_slo_ms`; that step
        carries the whole prompt as task 5's steps do - its tokens and their causal attention pairs -
        and nothing else (a prefill instance runs no decodes);
      * a decode instance keeps at most `max_batch` requests running; each one holds its seat for
        `output_tokens` steps and attends on average to its prompt plus half its answer (decode_context
        = running requests x that); every step must be at most `itl_slo_ms`. Its capacity is the
        highest rate of requests it completes that way, in steady state, over every batch it may run;
      * the fleet serves the smaller of (prefill instances x prefill capacity) and (decode instances x
        decode capacity); the best split maximises that, each role getting at least one instance; a
        tie goes to the split with FEWER prefill instances. Rates are decimal numbers: two splits whose
        served rates agree within a relative 1e-9 tie (equal but for floating-point rounding).
    A role that cannot meet its SLO even at the lowest load has capacity 0.
    Edges: prompt_tokens >= 1, output_tokens >= 1, max_batch >= 1, instances >= 2 (integers); SLOs > 0.
    Sanity anchor: DistServe's Figure 1 (a 13B model on A100s): prefill ~5.6 req/s and decode ~10 req/s
    per GPU split 2:1 serve 10 req/s, 3.3 per GPU.
    """
    raise NotImplementedError("lab-03 task 13: what one instance of each role serves within its SLO, then the best split")


def cheapest_fleet(rate_rps: float, output_tokens: int, offers: list[Offer]) -> FleetCost:
    """The cheapest prefill pool and decode pool that together serve `rate_rps`, and what it costs.

    Each Offer is one instance of a hardware kind for one role, with its price ($/hour) and its
    capacity in that role (req/s, task 13). A pool is some number of instances of ONE offer; it serves
    the rate when its instances' capacities add up to at least the rate (use the fewest such). Rates
    are decimal numbers: a sum that reaches the rate but for floating-point rounding (within a
    relative 1e-9) reaches it - 7 instances of 0.3 req/s serve 2.1 req/s, 3 serve 0.9. The two
    pools may use different hardware (Splitwise, ISCA'24: prompt machines and token machines of
    different GPUs). Among offers of a role, the one whose pool costs least wins; a tie goes to the
    offer listed first, and costs are decimal numbers too: pool costs that agree within a relative
    1e-9 tie (3 instances at $1.10 and 1 at $3.30 cost the same). Returns FleetCost with both pools,
    the $/hour and the $ per million OUTPUT tokens (`output_tokens` per request) served at `rate_rps`.
    Edges: rate_rps > 0; output_tokens an integer >= 1; offers a non-empty sequence of Offer (another
    item: TypeError naming `offers`) whose role is "prefill" or "decode" and whose price_per_hour and rps
    are finite and >= 0 (an offer with rps 0 cannot serve); a role no offer can serve -> ValueError
    naming `offers`. `offers` is not changed.
    Sanity anchor: 10 req/s of 256-token answers on 4 prefill instances at $2.69/h (2.5 req/s each) and
    1 decode instance at $1.49/h (10 req/s) -> $12.25/h, $1.33 per million output tokens.
    """
    raise NotImplementedError("lab-03 task 14: the cheapest pool for each role, and what the fleet costs")


# ================================================================ part 3: plan a fleet


def design_fleet(scenario: Scenario) -> Plan:
    """A fleet for `scenario`'s traffic: which accelerators, how many of each role, which threshold.

    Any method: the tasks above, the twin (fleetsim.plans.score(plan, scenario) simulates a plan
    exactly as the grader does; fleetsim.profile.roofline_profile(model, accelerator) is the step-time
    model of one GPU of the menu), a search, or a mix. The grader scores your Plan on the twin: it must
    be a well-formed Plan (disagg/tables.py), meet the scenario's SLOs for at least `target` of the
    requests, use at most `max_instances` GPUs, only accelerators in `menu`, and cost ($/hour) at most
    10% more than the cheapest plan the reference search found. The README (part 3) says what the twin
    models and why this is the job. Two plans at the same price are equally good (the grader compares
    prices, not plans).
    Sanity anchor: some scenario's cheapest plan is colocated and another's splits prefill from decode;
    a plan that misses the target by a hair (0.89 for 0.9) fails, however cheap.
    """
    raise NotImplementedError("lab-03 task 15: estimate with tasks 13-14, confirm the cheapest candidates on the twin")

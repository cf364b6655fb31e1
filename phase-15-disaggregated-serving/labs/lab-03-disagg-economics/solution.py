"""Lab 03 - the economics of disaggregation: one request (tasks 1-7), then a fleet (tasks 8-10).

Disaggregating prefill from decode cures one disease - the decode ITL spike when a prefill lands in a
decode batch - and charges one toll: the prompt's KV cache must cross a wire before decode can start.
Tasks 1-5 price both sides and decide; task 6 asks how much the verdict rests on the TTFT it divides
by; task 7 turns the trade into the knob real routers expose (which prompts go remote). Tasks 8-10
(part 2, FLEET.md) judge whole fleets from simulated or measured requests: SLO attainment, goodput,
and the choice of configuration.

Units: bytes are bytes; link rates are gigaBITS per second (Gb/s, 1e9 bit/s) as vendors quote them;
times are milliseconds. The tables (model shapes, fabrics, accelerators) and the types (ModelShape,
Fabric, Verdict, Decision) are given in disagg.tables.py.

Bad input, in every function: a bool, a string or None where a number belongs, or a float where a
count of tokens belongs (2048.0), is a TypeError; NaN, infinity or a value out of range is a ValueError.
Either way the message starts with the argument's name (e.g. "ttft_ms: ..."). `number` below does the
type and finiteness half for you.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from disagg.tables import ACCELERATORS, FABRICS, MODELS, Accelerator, Decision, Fabric, ModelShape, Verdict

DEFAULT_MAX_PENALTY = 0.10  # the toll may add at most 10% to colocated TTFT (the phase's "+10%")
DEFAULT_MIN_SPIKE_RATIO = 1.5  # ITL p99 / p50 at or above this = an interference spike worth curing


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
    """A ModelShape, or one looked up by name in MODELS (ValueError naming `model` if unknown)."""
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
        return float(link.gbps)
    if isinstance(link, str):
        if link.lower() not in FABRICS:
            raise ValueError(f"link_gbps: unknown fabric {link!r}; known: {', '.join(FABRICS)}")
        return float(FABRICS[link.lower()].gbps)
    return float(number("link_gbps", link))


def resolve_peak_tflops(peak: float | int | str | Accelerator) -> float:
    """Peak dense TFLOP/s from a number, an Accelerator, or a name in ACCELERATORS (errors name `peak_tflops`)."""
    if isinstance(peak, Accelerator):
        return float(peak.bf16_dense_tflops)
    if isinstance(peak, str):
        if peak.lower() not in ACCELERATORS:
            raise ValueError(f"peak_tflops: unknown accelerator {peak!r}; known: {', '.join(ACCELERATORS)}")
        return float(ACCELERATORS[peak.lower()].bf16_dense_tflops)
    return float(number("peak_tflops", peak))


def kv_bytes_per_token(model: ModelShape | str, dtype_bytes: int | float = 2) -> int:
    """Bytes of KV cache one token occupies - and must ship - across all of the model's layers.

    Everything the attention of a LATER token will read about this one, for every layer: read
    ModelShape's docstring for what a GQA/MHA layer and an MLA layer keep. `dtype_bytes` is the size
    of one cached element: 2 for fp16/bf16, 1 for fp8 (0.5 for a 4-bit cache is allowed; the result
    is truncated to whole bytes).
    Example: Llama-3-8B in fp16 caches 131,072 B (128 KiB) per token, so a 2048-token prompt is
    256 MiB of freight; fp8 halves it exactly.
    Errors: unknown model -> ValueError naming `model`; dtype_bytes not a number or <= 0 -> an error
    naming `dtype_bytes`.
    """
    # BEGIN SOLUTION lab-03 task 1: the bytes one token's KV cache occupies, all layers together
    shape = resolve_model(model)
    if number("dtype_bytes", dtype_bytes) <= 0:
        raise ValueError(f"dtype_bytes: must be a positive number of bytes per element, got {dtype_bytes!r}")
    if shape.attention == "mla":
        per_layer = shape.mla_latent_dim + shape.mla_rope_dim
    else:
        per_layer = 2 * shape.kv_heads * shape.head_dim
    return int(shape.layers * per_layer * dtype_bytes)
    # END SOLUTION


def transfer_ms(nbytes: int | float, link_gbps: float | str | Fabric, efficiency: float = 1.0) -> float:
    """Milliseconds the wire needs to move `nbytes` bytes: the toll, paid once per request.

    `link_gbps` is the line rate in gigaBITS per second, a Fabric, or a fabric name ("ib-hdr",
    "10gbe", ...); `efficiency` in (0, 1] is the fraction of line rate actually achieved (0.5: the
    copy runs at half the quoted rate). Zero bytes take 0 ms.
    Example: 256 MiB over InfiniBand HDR (200 Gb/s) at full rate = 10.74 ms; over 10 GbE = 214.7 ms.
    Errors name the argument: nbytes < 0; a rate <= 0 or an unknown fabric (`link_gbps`);
    efficiency outside (0, 1].
    """
    # BEGIN SOLUTION lab-03 task 2: how long the link takes to move nbytes, in milliseconds
    if number("nbytes", nbytes) < 0:
        raise ValueError(f"nbytes: must be >= 0, got {nbytes}")
    gbps = resolve_link_gbps(link_gbps)
    if gbps <= 0:
        raise ValueError(f"link_gbps: bandwidth must be > 0 Gb/s, got {gbps}")
    if not 0 < number("efficiency", efficiency) <= 1:
        raise ValueError(f"efficiency: must be in (0, 1], got {efficiency}")
    return nbytes * 8 / (gbps * 1e9 * efficiency) * 1e3
    # END SOLUTION


def interference_tax_ms(output_tokens: int, itl_p50_ms: float, itl_p99_ms: float) -> float:
    """The ITL budget an ITL-p99 SLO reserves over one colocated request: the tax disaggregation cures.

    When prefills share a batch with decodes, some decode steps stall: ITL p99 rises far above p50
    (the phase's figure: 38 ms vs 12 ms). A deployment promising "every gap within p99" must budget
    every inter-token gap of a request at p99, i.e. reserve the excess over the steady p50 gap on
    each of them. Only the gaps BETWEEN output tokens count: the wait for the first token is TTFT,
    not an inter-token gap.
    What it answers: how much latency budget the SLO sets aside per request (capacity planning: a
    tighter budget means fewer streams per GPU). What it does NOT answer: how much slower a typical
    request is - by definition only ~1% of gaps reach p99, and the p99 of a SUM of gaps is far below
    the sum of per-gap p99s. Compare it with the toll (transfer_ms), paid once per request.
    Example: 257 output tokens at p50/p99 = 12/38 ms -> 6,656 ms budgeted; 1 token -> 0.
    Zero tokens and p99 == p50 are valid (no tax). Errors name the argument: output_tokens < 0 or
    not an integer; itl_p50_ms < 0; itl_p99_ms < itl_p50_ms.
    """
    # BEGIN SOLUTION lab-03 task 3: what prefill interference adds to one request's decode, in milliseconds
    if number("output_tokens", output_tokens, integer=True) < 0:
        raise ValueError(f"output_tokens: must be >= 0, got {output_tokens}")
    if number("itl_p50_ms", itl_p50_ms) < 0:
        raise ValueError(f"itl_p50_ms: must be >= 0, got {itl_p50_ms}")
    if number("itl_p99_ms", itl_p99_ms) < itl_p50_ms:
        raise ValueError(f"itl_p99_ms: must be >= itl_p50_ms ({itl_p50_ms}), got {itl_p99_ms}")
    return max(output_tokens - 1, 0) * (itl_p99_ms - itl_p50_ms)
    # END SOLUTION


def penalty_ratio(transfer_ms: float, ttft_ms: float) -> float:
    """The qualifying number: the toll as a fraction of colocated TTFT (0.05 = TTFT grows 5%).

    Example: a 10.7 ms toll on a 200 ms TTFT = 0.0537. A 0 ms toll is valid (penalty 0); a TTFT of
    0 or less is not (it is what the toll is measured against). Errors name the argument.
    """
    # BEGIN SOLUTION lab-03 task 4: the toll measured against what the client waits for today
    if number("transfer_ms", transfer_ms) < 0:
        raise ValueError(f"transfer_ms: must be >= 0, got {transfer_ms}")
    if number("ttft_ms", ttft_ms) <= 0:
        raise ValueError(f"ttft_ms: must be > 0, got {ttft_ms}")
    return transfer_ms / ttft_ms
    # END SOLUTION


def should_disaggregate(
    model: ModelShape | str,
    prompt_tokens: int,
    output_tokens: int,
    link_gbps: float | str | Fabric,
    ttft_ms: float,
    itl_p50_ms: float,
    itl_p99_ms: float,
    *,
    kv_dtype_bytes: int | float = 2,
    efficiency: float = 1.0,
    max_penalty: float = DEFAULT_MAX_PENALTY,
    min_spike_ratio: float = DEFAULT_MIN_SPIKE_RATIO,
) -> Decision:
    """Decide, from colocated measurements, whether to split prefill from decode - and say why.

    The rules, in order:
      * no disease: if colocated ITL p99 is less than `min_spike_ratio` times p50 there is no
        interference spike to cure -> NO_NO_DISEASE, however good the wire;
      * slow link: if shipping this prompt's KV (`kv_dtype_bytes` per element, at `efficiency` of
        the link) would add more than `max_penalty` of colocated TTFT -> NO_SLOW_LINK;
      * otherwise YES.
    Edges are inclusive: a spike ratio EQUAL to min_spike_ratio is a disease; a penalty EQUAL to
    max_penalty is acceptable. Returns a Decision carrying every intermediate number (tasks 1-4).
    `reason` is one human-readable line; it is promised to contain the deciding measurement as the
    CLI prints it: the spike ratio with two decimals ("1.08") for NO_NO_DISEASE, the penalty as a
    percentage with one decimal ("107.4%") for NO_SLOW_LINK and YES. Other wording is yours.
    Example: Llama-3-8B, 2048-token prompt, TTFT 200 ms, ITL p50/p99 12/38 ms -> YES on ib-hdr
    (penalty 5.4%), NO_SLOW_LINK on 10gbe (107.4%); with p99 13 ms -> NO_NO_DISEASE (1.08).
    Errors name the argument; itl_p50_ms must be > 0 (a ratio is taken against it), max_penalty
    >= 0, min_spike_ratio >= 1; the others as in tasks 1-4.
    """
    # BEGIN SOLUTION lab-03 task 5: the verdict, in the order the docstring asks the questions, with its reason
    if number("prompt_tokens", prompt_tokens, integer=True) < 0:
        raise ValueError(f"prompt_tokens: must be >= 0, got {prompt_tokens}")
    if number("itl_p50_ms", itl_p50_ms) <= 0:
        raise ValueError(f"itl_p50_ms: must be > 0, got {itl_p50_ms}")
    if number("max_penalty", max_penalty) < 0:
        raise ValueError(f"max_penalty: must be >= 0, got {max_penalty}")
    if number("min_spike_ratio", min_spike_ratio) < 1:
        raise ValueError(f"min_spike_ratio: must be >= 1 (p99 is never below p50), got {min_spike_ratio}")
    kv_bytes = prompt_tokens * kv_bytes_per_token(model, kv_dtype_bytes)
    toll = transfer_ms(kv_bytes, link_gbps, efficiency)
    penalty = penalty_ratio(toll, ttft_ms)
    tax = interference_tax_ms(output_tokens, itl_p50_ms, itl_p99_ms)
    spike = itl_p99_ms / itl_p50_ms
    if spike < min_spike_ratio:
        verdict = Verdict.NO_NO_DISEASE
        reason = f"ITL p99/p50 = {spike:.2f} < {min_spike_ratio:g}: no interference spike to cure"
    elif penalty > max_penalty:
        verdict = Verdict.NO_SLOW_LINK
        reason = f"toll {toll:.1f} ms = {penalty:.1%} of TTFT > {max_penalty:.1%}: the wire is too slow"
    else:
        verdict = Verdict.YES
        reason = (
            f"ITL p99/p50 = {spike:.2f} shows interference; toll {toll:.1f} ms = {penalty:.1%} of TTFT "
            f"<= {max_penalty:.1%} (tax {tax:.0f} ms budgeted per request -> toll {toll:.1f} ms once)"
        )
    return Decision(verdict, kv_bytes, toll, penalty, spike, tax, reason)
    # END SOLUTION


def prefill_ttft_ms(
    model: ModelShape | str, prompt_tokens: int, peak_tflops: float | str | Accelerator, mfu: float
) -> float:
    """The colocated TTFT a verdict divides by, modelled from compute: prefill FLOPs at `mfu` of peak.

    Count a multiply-add as 2 FLOPs. Weights: every prompt token passes once through every parameter
    it activates (ModelShape.params_b, in billions). Attention: in every layer each token's query is
    scored against its own key and every EARLIER one (causal: half of the n x n pairs, take exactly
    n x n / 2), over the full model width (ModelShape.hidden), and the same pairs weight the values.
    The chip delivers `mfu` (model FLOPs utilisation, in (0, 1]) of `peak_tflops` (TFLOP/s, a number,
    an Accelerator, or a name in ACCELERATORS). Queueing, the decode step and the network are not
    in it: this is the compute floor of TTFT.
    Example: Llama-3-8B, 2048 tokens on an H100 (989 TFLOP/s dense bf16): ~33.9 TFLOP, so 201 ms at
    17% MFU (the phase's ~200 ms) but 62 ms at a realistic 55% - where IB HDR's 10.7 ms toll is 17%
    of TTFT and the 10% rule says NO_SLOW_LINK. A verdict is only as good as the TTFT under it.
    0 tokens -> 0 ms. Errors name the argument: prompt_tokens < 0 or not an integer; peak <= 0 or
    unknown; mfu outside (0, 1]; a model whose params_b or hidden is unknown (0) -> `model`.
    """
    # BEGIN SOLUTION lab-03 task 6: the time one prompt's prefill takes on this accelerator at this MFU
    shape = resolve_model(model)
    if shape.params_b <= 0 or shape.hidden <= 0:
        raise ValueError(f"model: {shape.name} has no params_b/hidden for a FLOPs model")
    n = number("prompt_tokens", prompt_tokens, integer=True)
    if n < 0:
        raise ValueError(f"prompt_tokens: must be >= 0, got {prompt_tokens}")
    peak = resolve_peak_tflops(peak_tflops)
    if peak <= 0:
        raise ValueError(f"peak_tflops: must be > 0, got {peak}")
    if not 0 < number("mfu", mfu) <= 1:
        raise ValueError(f"mfu: must be in (0, 1], got {mfu}")
    weights = 2 * shape.params_b * 1e9 * n
    attention = shape.layers * 2 * (2 * shape.hidden) * n * n / 2  # QK^T and AV, causal half
    return (weights + attention) / (peak * 1e12 * mfu) * 1e3
    # END SOLUTION


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
    This function picks that value from the economics. Colocated, an n-token prompt's TTFT is its
    prefill time at `prefill_tokens_per_s`. Remote, it pays a toll: a fixed `handoff_ms` per request
    (the extra hop, the decode worker's wait for a step, its own first step - whatever your
    measurements show) plus the wire time of n tokens of KV (`kv_dtype_bytes`, `efficiency` as in
    tasks 1-2). Remote prefill PAYS for a prompt when its toll is at most `max_penalty` of its
    colocated TTFT (inclusive, as in task 5).
    Returns the largest n for which remote does not pay - so every longer prompt pays; 0 when every
    prompt pays; None when no prompt length ever pays on this wire (send nothing remote).
    Example: Llama-3-8B fp16 on ib-hdr, 10,000 prompt tokens/s, handoff 5 ms, 10% -> 1051: a
    1052-token prompt is the first worth shipping. On 100gbe -> None (the wire alone costs 10.5%).
    Errors name the argument: prefill_tokens_per_s <= 0, handoff_ms < 0, max_penalty < 0, and the
    model/link/dtype/efficiency errors of tasks 1-2.
    """
    # BEGIN SOLUTION lab-03 task 7: the longest prompt for which remote prefill does not pay
    if number("prefill_tokens_per_s", prefill_tokens_per_s) <= 0:
        raise ValueError(f"prefill_tokens_per_s: must be > 0, got {prefill_tokens_per_s}")
    if number("handoff_ms", handoff_ms) < 0:
        raise ValueError(f"handoff_ms: must be >= 0, got {handoff_ms}")
    if number("max_penalty", max_penalty) < 0:
        raise ValueError(f"max_penalty: must be >= 0, got {max_penalty}")
    per_token_bytes = kv_bytes_per_token(model, kv_dtype_bytes)
    prefill_ms_per_token = 1e3 / prefill_tokens_per_s

    def pays(n: int) -> bool:
        toll = handoff_ms + transfer_ms(n * per_token_bytes, link_gbps, efficiency)
        return toll <= max_penalty * (n * prefill_ms_per_token)

    wire_share = transfer_ms(per_token_bytes, link_gbps, efficiency) / prefill_ms_per_token
    if wire_share > max_penalty or (wire_share == max_penalty and handoff_ms > 0):
        return None  # the wire alone takes more than the limit on every token: no length amortises it
    if handoff_ms == 0:
        return 0
    first = max(math.ceil(handoff_ms / prefill_ms_per_token / (max_penalty - wire_share)), 1)
    for _ in range(3):  # the closed form in floats can be one off at an exact tie: one too long...
        if first > 1 and pays(first - 1):
            first -= 1
    for _ in range(3):  # ... or one short
        if pays(first):
            break
        first += 1
    return first - 1
    # END SOLUTION


# ---------------------------------------------------------------- part 2: a fleet, not one request
# Tasks 8-10 turn simulated (or measured) runs into a decision. The records are lab-02's capture
# records (labkit.capture.RequestRecord: status, sent_s, arrivals_s in seconds, error), which the
# serving twin in fleetsim/ writes for simulated runs too; plan_fleet.py calls these three functions.


def slo_attainment(records, ttft_slo_ms: float, itl_slo_ms: float) -> float:
    """The fraction of requests that met BOTH SLOs, in [0, 1].

    A request meets them when it succeeded (status 200, at least one token, no error), its TTFT
    (first token's arrival - sent, both in seconds) is at most `ttft_slo_ms`, and its slowest
    inter-token gap is at most `itl_slo_ms` (a one-token answer has no gap and meets the ITL SLO).
    Edges are inclusive (a TTFT exactly at the SLO meets it). A failed request is a miss: it counts
    in the denominator, never in the numerator.
    Example: 4 requests - one fine, one with a 600 ms TTFT, one with a 150 ms stall, one failed -
    against 500 ms / 100 ms SLOs -> 0.25.
    Errors name the argument: no records -> `records` (ValueError); SLOs not > 0 -> ValueError.
    """
    # BEGIN SOLUTION lab-03 task 8: a request counts only if it succeeded, its TTFT and its worst gap both within the SLOs
    if number("ttft_slo_ms", ttft_slo_ms) <= 0:
        raise ValueError(f"ttft_slo_ms: must be > 0, got {ttft_slo_ms}")
    if number("itl_slo_ms", itl_slo_ms) <= 0:
        raise ValueError(f"itl_slo_ms: must be > 0, got {itl_slo_ms}")
    records = list(records)
    if not records:
        raise ValueError("records: need at least one request to measure attainment")
    met = 0
    for r in records:
        if r.status != 200 or not r.arrivals_s or r.error is not None:
            continue
        ttft_ms = (r.arrivals_s[0] - r.sent_s) * 1e3
        gaps = [b - a for a, b in zip(r.arrivals_s, r.arrivals_s[1:], strict=False)]
        worst_gap_ms = max(gaps, default=0.0) * 1e3
        met += ttft_ms <= ttft_slo_ms and worst_gap_ms <= itl_slo_ms
    return met / len(records)
    # END SOLUTION


def goodput(rates: list[float], attainments: list[float], target: float = 0.9) -> float:
    """DistServe's goodput from a sweep: the highest request rate (req/s) at which at least `target` of
    requests meet the SLOs.

    `rates` are the swept rates, strictly increasing and > 0; `attainments[i]` is the attainment
    measured at `rates[i]` (task 8), in [0, 1]. Walk up from the lowest rate: the first rate whose
    attainment is BELOW `target` ends the good region (an attainment equal to `target` is good), and
    the goodput is where the straight line between the last good point and that first bad one crosses
    `target`. Points after the first bad one are ignored, even if they recover (noise, not capacity).
    Edges: the lowest rate already bad -> 0.0 (nothing was shown to be good); no rate bad -> the
    highest rate swept (never extrapolate beyond what was simulated).
    Example: rates [1, 2, 3, 4], attainments [1.0, 0.95, 0.85, 0.5], target 0.9 -> 2.5.
    Errors (ValueError, naming the argument): empty or different lengths -> `attainments`; rates not
    > 0 or not strictly increasing -> `rates`; attainment outside [0, 1] -> `attainments`; target
    outside (0, 1] -> `target`.
    """
    # BEGIN SOLUTION lab-03 task 9: find the first rate below target; interpolate between it and the last good one
    if not 0 < number("target", target) <= 1:
        raise ValueError(f"target: must be in (0, 1], got {target}")
    rates, attainments = list(rates), list(attainments)
    if not rates or len(rates) != len(attainments):
        raise ValueError(f"attainments: need one per rate, got {len(attainments)} for {len(rates)} rates")
    for i, r in enumerate(rates):
        if number("rates", r) <= 0 or (i and r <= rates[i - 1]):
            raise ValueError(f"rates: must be > 0 and strictly increasing, got {rates}")
    for a in attainments:
        if not 0 <= number("attainments", a) <= 1:
            raise ValueError(f"attainments: must be in [0, 1], got {a}")
    if attainments[0] < target:
        return 0.0
    for i in range(1, len(rates)):
        if attainments[i] < target:
            r0, r1, a0, a1 = rates[i - 1], rates[i], attainments[i - 1], attainments[i]
            return r0 + (r1 - r0) * (a0 - target) / (a0 - a1)
    return float(rates[-1])
    # END SOLUTION


def choose_config(goodputs: dict[str, float], baseline: str, min_gain: float = 0.05) -> str:
    """Which configuration to deploy, from each one's simulated goodput (req/s, task 9).

    The `baseline` (the colocated fleet you run today) stays unless another configuration's goodput
    beats it by MORE than `min_gain` (a fraction: 0.05 = 5%): splitting prefill from decode adds
    moving parts and a KV link, and a win inside the simulator's noise is not a win. Among those that
    beat it, the highest goodput wins; a tie goes to the one listed first. A baseline goodput of 0 is
    beaten by any goodput > 0.
    Example: {"colocated x4": 10.0, "P/D 1:3": 10.4, "P/D 2:2": 12.0}, baseline "colocated x4"
    -> "P/D 2:2"; with only "P/D 1:3" (+4%) the baseline stays.
    Errors (ValueError, naming the argument): baseline not in goodputs -> `baseline`; a negative
    goodput -> `goodputs`; min_gain < 0 -> `min_gain`.
    """
    # BEGIN SOLUTION lab-03 task 10: keep the baseline unless something beats it by more than min_gain; then the best
    if baseline not in goodputs:
        raise ValueError(f"baseline: {baseline!r} is not one of the configurations {list(goodputs)}")
    if number("min_gain", min_gain) < 0:
        raise ValueError(f"min_gain: must be >= 0, got {min_gain}")
    for name, g in goodputs.items():
        if number("goodputs", g) < 0:
            raise ValueError(f"goodputs: {name!r} has a negative goodput {g}")
    bar = goodputs[baseline] * (1 + min_gain)
    best = baseline
    for name, g in goodputs.items():
        if g > bar and (best == baseline or g > goodputs[best]):
            best = name
    return best
    # END SOLUTION

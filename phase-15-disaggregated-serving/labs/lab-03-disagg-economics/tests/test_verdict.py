"""Tasks 8-9, the verdict: both sides of the trade, and the router's knob.
`pytest -m lab03_task8`, `-m lab03_task9`.

The stalls handed to the verdict here are given numbers (so a task 5 bug never fails a task 8 test);
the phase's figures: colocated TTFT ~200 ms, steady ITL 12 ms, a stalled gap 38 ms. The verdict on
lab-02's real wire is in test_wire.py.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from disagg.tables import Decision, ModelShape, Stall, Verdict
from disagg.testing import INF, NAN, raises

task8 = pytest.mark.lab03_task8
task9 = pytest.mark.lab03_task9
PROMPT_8B = 268_435_456
PHASE_STALL = Stall(26.0, 38.0)  # a 38 ms gap where the steady one is 12: 26 ms more for each decode
# 1 layer x 1 KV head x dim 625 x 2 x 1 B = 1250 B/token: 1000 tokens = 1.25 MB = exactly 10 ms at 1 Gb/s
EDGE_MODEL = ModelShape("edge-toy", layers=1, kv_heads=1, head_dim=625)


def decide(
    impl,
    link="ib-hdr",
    prompt=2048,
    ttft=200.0,
    itl=12.0,
    stall=PHASE_STALL,
    batch=4,
    model="llama-3-8b",
    **kw,
):
    return impl.should_disaggregate(model, prompt, link, ttft, itl, stall, batch, **kw)


def spared_in(reason: str, ms: float) -> bool:
    whole = round(ms)
    return f"{whole} ms" in reason or f"{whole:,} ms" in reason


# ---------------------------------------------------------------- task 8: should_disaggregate
@task8
def test_the_phase_on_infiniband_is_yes(impl):
    d = decide(impl)
    assert isinstance(d, Decision) and d.verdict == Verdict.YES, d
    assert (d.kv_bytes, round(d.toll_ms, 3), round(d.penalty_ratio, 4)) == (PROMPT_8B, 10.737, 0.0537), d
    assert d.spike_ratio == pytest.approx(38 / 12) and d.spared_ms == pytest.approx(4 * 26.0), d
    assert "5.4%" in d.reason, f"the reason shows the deciding penalty: {d.reason!r}"


@task8
def test_the_phase_on_10gbe_is_a_slow_link(impl):
    d = decide(impl, "10gbe")
    assert d.verdict == Verdict.NO_SLOW_LINK, f"215 ms toll, 104 ms of stall spared: {d}"
    assert "107.4%" in d.reason, d.reason


@task8
@pytest.mark.parametrize("link", ["10gbe", "ib-hdr", "nvlink4"])
def test_no_spike_no_disease_whatever_the_wire(impl, link):
    d = decide(impl, link, stall=Stall(1.0, 13.0))
    assert d.verdict == Verdict.NO_NO_DISEASE and "1.08" in d.reason, d
    sick = decide(impl, link)  # the same prompt and wire, with the disease
    carried = (d.kv_bytes, d.toll_ms, d.penalty_ratio, d.spike_ratio, d.spared_ms)
    assert carried == pytest.approx((sick.kv_bytes, sick.toll_ms, sick.penalty_ratio, 13 / 12, 4 * 1.0)), (
        f"every number is carried whatever the verdict: freight, toll, penalty, stretch, spared; got {d}"
    )


@task8
def test_no_running_decode_no_disease(impl):
    d = decide(impl, "10gbe", stall=Stall(1400.0, 1412.0), batch=0)
    assert d.verdict == Verdict.NO_NO_DISEASE, f"nothing to stall: {d}"
    assert d.spared_ms == 0.0 and d.toll_ms == pytest.approx(214.748, abs=1e-3), (
        "every number is still carried"
    )


@task8
def test_a_long_prompt_that_stalls_decode_for_seconds_goes_remote_on_a_slow_wire(impl):
    """32k tokens of Llama-3-8B on an H100 at 50% MFU: ~1.5 s of prefill; on 25 GbE the toll is 1.37 s,
    92% of TTFT - over the 10% limit. Colocated, 32 running decodes would each wait ~1.5 s."""
    d = decide(impl, "25gbe", prompt=32768, ttft=1494.0, itl=11.6, stall=Stall(1485.6, 1497.2), batch=32)
    assert d.verdict == Verdict.YES, f"47.5 s of stall spared against a 1.37 s toll: {d}"
    assert (
        d.spared_ms == pytest.approx(32 * 1485.6) and "92.0%" in d.reason and spared_in(d.reason, d.spared_ms)
    ), d


@task8
def test_the_spared_stall_is_weighed_against_the_toll_inclusively(impl):
    # EDGE_MODEL: 1000 tokens = 10 ms at 1 Gb/s on a 50 ms TTFT (20% > 10%): the stall side decides
    at = decide(impl, 1, 1000, 50.0, 12.0, Stall(2.5, 20.0), 4, model=EDGE_MODEL, kv_dtype_bytes=1)
    under = decide(impl, 1, 1000, 50.0, 12.0, Stall(2.4375, 20.0), 4, model=EDGE_MODEL, kv_dtype_bytes=1)
    assert (at.toll_ms, at.spared_ms) == (10.0, 10.0), f"setup: a 10 ms toll, 4 x 2.5 ms spared: {at}"
    assert at.verdict == Verdict.YES, f"spared == toll pays (inclusive): {at}"
    assert under.verdict == Verdict.NO_SLOW_LINK, f"9.75 ms spared < 10 ms toll: {under}"


@task8
def test_the_penalty_edge_is_inclusive(impl):
    at = decide(impl, 1, 1000, 100.0, 12.0, Stall(0.5, 38.0), 1, model=EDGE_MODEL, kv_dtype_bytes=1)
    over = decide(impl, 1, 1001, 100.0, 12.0, Stall(0.5, 38.0), 1, model=EDGE_MODEL, kv_dtype_bytes=1)
    assert at.penalty_ratio == 0.1 and at.verdict == Verdict.YES, (
        f"penalty == max_penalty is acceptable: {at}"
    )
    assert over.verdict == Verdict.NO_SLOW_LINK, f"one token more tips it over: {over}"


@task8
def test_the_spike_edge_is_inclusive(impl):
    at = decide(impl, stall=Stall(6.0, 18.0), min_spike_ratio=1.5)
    under = decide(impl, stall=Stall(5.99, 17.99), min_spike_ratio=1.5)
    assert (at.verdict, under.verdict) == (Verdict.YES, Verdict.NO_NO_DISEASE), (at, under)


@task8
def test_the_headline_at_55_percent_mfu(impl):
    """At 55% of an H100's peak the 2048-token prefill takes ~55 ms. Serialized over ONE HDR link the
    10.7 ms toll is ~20% of it; an H100 node ships a 400 Gb/s NDR NIC per GPU (5.4 ms: ~10%), and
    streamed per layer under the prefill the toll left is ~0.3 ms."""
    ttft = 2.9689e13 / (989e12 * 0.55) * 1e3  # task 6's count for this prompt, written out: task 8 alone
    small = Stall(5.0, 30.0)  # one decode, a small stall: only the penalty rule can say YES
    got = {case: decide(impl, link, ttft=ttft, stall=small, batch=1, layerwise=lw)
           for case, (link, lw) in {"hdr": ("ib-hdr", False), "ndr": ("ib-ndr", False), "hdr layer-wise": ("ib-hdr", True)}.items()}  # fmt: skip
    assert [d.verdict for d in got.values()] == [Verdict.NO_SLOW_LINK, Verdict.YES, Verdict.YES], got
    assert got["hdr layer-wise"].toll_ms == pytest.approx(PROMPT_8B * 8 / 200e9 * 1e3 / 32, rel=1e-6), (
        "the exposed toll is the toll"
    )


@task8
def test_layerwise_streams_under_the_prefill_the_ttft_measures(impl):
    """10 GbE under the phase's 200 ms prefill: each of 32 layers takes 6.25 ms to compute and 6.71 ms to
    send, so the backlog grows by 0.46 ms a layer: ~21 ms is left after prefill (not 215 ms)."""
    d = decide(impl, "10gbe", layerwise=True, batch=1, stall=Stall(1.0, 38.0))
    w, c = PROMPT_8B * 8 / 10e9 * 1e3 / 32, 200.0 / 32
    assert d.toll_ms == pytest.approx(w + 31 * (w - c), rel=1e-6), d
    assert d.verdict == Verdict.NO_SLOW_LINK and "10.5%" in d.reason, d
    assert (
        decide(impl, "10gbe", layerwise=True, max_penalty=0.11, batch=1, stall=Stall(1.0, 38.0)).verdict
        == Verdict.YES
    )


@task8
def test_layerwise_streams_at_the_links_efficiency(impl):
    """Streamed per layer over a 10 GbE link that achieves half its line rate: each layer takes 13.4 ms
    to send and 6.25 to compute, so the backlog grows twice as fast as at line rate."""
    d = decide(impl, "10gbe", layerwise=True, efficiency=0.5, batch=1, stall=Stall(1.0, 38.0))
    w, c = PROMPT_8B * 8 / (10e9 * 0.5) * 1e3 / 32, 200.0 / 32
    assert d.toll_ms == pytest.approx(w + 31 * (w - c), rel=1e-6), f"want {w + 31 * (w - c):.1f} ms: {d}"
    assert d.verdict == Verdict.NO_SLOW_LINK, d


@task8
def test_efficiency_and_the_dtype_reach_the_wire(impl):
    small = dict(batch=1, stall=Stall(1.0, 38.0))  # one decode, a 1 ms stall: only the penalty rule says YES
    full, half = decide(impl, **small), decide(impl, efficiency=0.5, **small)
    assert half.toll_ms == pytest.approx(2 * full.toll_ms) and half.verdict == Verdict.NO_SLOW_LINK, (
        full,
        half,
    )
    fp16, fp8 = decide(impl, "100gbe", **small), decide(impl, "100gbe", kv_dtype_bytes=1, **small)
    assert (fp16.verdict, fp8.verdict) == (Verdict.NO_SLOW_LINK, Verdict.YES), (
        "fp8 halves the freight: 10.7% -> 5.4%"
    )


@task8
def test_the_limits_are_the_callers(impl):
    assert decide(impl, max_penalty=0.05, batch=1, stall=Stall(1.0, 38.0)).verdict == Verdict.NO_SLOW_LINK
    assert decide(impl, "100gbe", max_penalty=0.2).verdict == Verdict.YES
    assert decide(impl, min_spike_ratio=4.0).verdict == Verdict.NO_NO_DISEASE
    assert decide(impl, stall=Stall(1.0, 13.0), min_spike_ratio=1.0).verdict == Verdict.YES, (
        "1.0 is a valid threshold"
    )
    assert decide(impl, max_penalty=0.0, batch=1, stall=Stall(0.0, 38.0)).verdict == Verdict.NO_SLOW_LINK, (
        "0 is valid"
    )


@task8
def test_an_empty_prompt_ships_nothing(impl):
    d = decide(impl, "10gbe", prompt=0)
    assert (d.verdict, d.kv_bytes, d.toll_ms, d.penalty_ratio) == (Verdict.YES, 0, 0.0, 0.0), d


@task8
@given(
    prompt=st.integers(1, 32_768),
    gbps=st.sampled_from([10, 25, 100, 200, 400, 3600]),
    spared=st.floats(0, 500),
)
def test_the_verdict_agrees_with_its_parts(impl, prompt, gbps, spared):
    d = decide(impl, gbps, prompt, model="llama-3-70b", stall=Stall(spared, 38.0), batch=1)
    toll = prompt * 327_680 * 8 / (gbps * 1e9) * 1e3
    want = Verdict.YES if toll / 200.0 <= 0.10 or spared >= toll else Verdict.NO_SLOW_LINK
    assert math.isclose(d.toll_ms, toll, rel_tol=1e-9) and d.verdict == want, (toll, spared, d)


BAD8 = [
    (dict(ttft=0.0), ValueError, "ttft_ms"), (dict(ttft=NAN), ValueError, "ttft_ms"), (dict(ttft="200"), TypeError, "ttft_ms"),
    (dict(itl=0.0), ValueError, "itl_ms"), (dict(itl=NAN), ValueError, "itl_ms"), (dict(itl=True), TypeError, "itl_ms"),
    (dict(stall=(26.0, 38.0)), TypeError, "stall"), (dict(stall=Stall(-1.0, 38.0)), ValueError, "stall"),
    (dict(stall=Stall(1.0, 11.0)), ValueError, "stall"), (dict(stall=Stall(NAN, 38.0)), ValueError, "stall"),
    (dict(stall=Stall(1.0, INF)), ValueError, "stall"),
    (dict(batch=-1), ValueError, "decode_batch"), (dict(batch=2.0), TypeError, "decode_batch"),
    (dict(batch=True), TypeError, "decode_batch"), (dict(layerwise=1), TypeError, "layerwise"),
    (dict(layerwise="yes"), TypeError, "layerwise"), (dict(max_penalty=-0.1), ValueError, "max_penalty"),
    (dict(max_penalty=NAN), ValueError, "max_penalty"), (dict(max_penalty=True), TypeError, "max_penalty"),
    (dict(min_spike_ratio=0.99), ValueError, "min_spike_ratio"), (dict(min_spike_ratio=NAN), ValueError, "min_spike_ratio"),
    (dict(prompt=-1), ValueError, "prompt_tokens"), (dict(prompt=2048.0), TypeError, "prompt_tokens"),
    (dict(model="llama-9"), ValueError, "model"), (dict(link="carrier-pigeon"), ValueError, "link_gbps"),
    (dict(link=0), ValueError, "link_gbps"), (dict(efficiency=0.0), ValueError, "efficiency"),
    (dict(kv_dtype_bytes=True), TypeError, "kv_dtype_bytes"), (dict(kv_dtype_bytes=0), ValueError, "kv_dtype_bytes"),
    (dict(kv_dtype_bytes="2"), TypeError, "kv_dtype_bytes"), (dict(kv_dtype_bytes=NAN), ValueError, "kv_dtype_bytes"),
    (dict(stall=Stall("26", 38.0)), TypeError, "stall"), (dict(stall=Stall(26.0, None)), TypeError, "stall"),
    (dict(ttft=-1.0, layerwise=True), ValueError, "ttft_ms"), (dict(ttft="200", layerwise=True), TypeError, "ttft_ms"),
]  # fmt: skip


@task8
@pytest.mark.parametrize("bad, exc, name", BAD8, ids=[f"{n}-{i}" for i, (*_, n) in enumerate(BAD8)])
@pytest.mark.parametrize("batch", [4, 0])
def test_verdict_bad_input_names_the_argument(impl, bad, exc, name, batch):
    with raises(exc, name):
        decide(impl, **({"batch": batch} | bad))


# ---------------------------------------------------------------- task 9: local_prefill_max_tokens
# 1 layer x 1 KV head x dim 15625 x 2 x 1 B = 31,250 B/token = 0.25 ms at 1 Gb/s; at 1000 tokens/s
# prefill takes 1 ms a token: the wire alone is 25% of TTFT on every token.
WIRE_TOY = ModelShape("wire-toy", layers=1, kv_heads=1, head_dim=15625)


def knob(impl, **kw):
    args = dict(model="llama-3-8b", link_gbps="ib-hdr", prefill_tokens_per_s=10_000.0, handoff_ms=5.0) | kw
    return impl.local_prefill_max_tokens(**args)


@task9
def test_8b_on_infiniband(impl):
    got = knob(impl)
    assert isinstance(got, int) and not isinstance(got, bool) and got == 1051, (
        "the wire takes 5.24% of TTFT per token, the 5 ms handoff needs the other 4.76% of n x 0.1 ms: "
        f"n >= 1052 pays; want the int 1051, got {got!r}"
    )


@task9
def test_a_wire_over_the_limit_never_pays(impl):
    assert knob(impl, link_gbps="100gbe") is None, (
        "each token's KV takes 10.5% of its prefill time on 100 GbE"
    )


@task9
def test_every_argument_moves_the_knob(impl):
    got = {"fp8 100gbe": knob(impl, link_gbps="100gbe", kv_dtype_bytes=1), "50%": knob(impl, efficiency=0.5),
           "20% limit": knob(impl, max_penalty=0.2), "5000 tok/s": knob(impl, prefill_tokens_per_s=5000.0),
           "20 ms": knob(impl, handoff_ms=20.0)}  # fmt: skip
    assert got == {"fp8 100gbe": 1051, "50%": None, "20% limit": 338, "5000 tok/s": 338, "20 ms": 4204}, got


@task9
def test_the_exact_tie_pays(impl):
    # 100 ms handoff, 50% limit: at 400 tokens the toll is 100 + 100 ms = exactly 50% of 400 ms
    got = impl.local_prefill_max_tokens(WIRE_TOY, 1, 1000.0, 100.0, kv_dtype_bytes=1, max_penalty=0.5)
    assert got == 399, f"400 tokens pay at the tie: the longest local prompt is 399, got {got!r}"


@task9
@pytest.mark.parametrize("handoff_ms, max_penalty, tie", [
    (10.0, 0.29, 250), (2.0, 0.29, 50), (1.0, 0.27, 50), (2.5, 0.3, 50), (0.7, 0.35, 7), (1.1, 0.36, 10),
    (0.07, 0.26, 7),
])  # fmt: skip
def test_a_tie_in_decimal_numbers_pays(impl, handoff_ms, max_penalty, tie):
    """The wire is 25% of TTFT on every token; handoff / (limit - 25%) tokens is an exact tie in the
    numbers as written (10 ms / 4% = 250), which no binary float holds exactly: the tie pays."""
    got = impl.local_prefill_max_tokens(
        WIRE_TOY, 1, 1000.0, handoff_ms, kv_dtype_bytes=1, max_penalty=max_penalty
    )
    assert got == tie - 1, (
        f"{tie} tokens tie ({handoff_ms} ms / {max_penalty - 0.25:.2f}) and pay: want {tie - 1}, got {got!r}"
    )


@task9
def test_a_token_of_a_fractional_byte_size_counts_at_its_size(impl):
    """A 4-bit cache of 5 elements a token is 2.5 B a token, not 3: on a 1 kb/s wire 20 ms a token
    against 100 ms of prefill (20%); a 10 ms handoff needs 5% of n x 100 ms: n >= 2 pays."""
    odd = ModelShape("odd-mla", 1, 0, 0, attention="mla", mla_latent_dim=3, mla_rope_dim=2)
    got = impl.local_prefill_max_tokens(odd, 1e-6, 10.0, 10.0, kv_dtype_bytes=0.5, max_penalty=0.25)
    assert got == 1, f"2.5 B a token: 2 tokens pay, want 1, got {got!r} (3 B a token would give 9)"
    tie = impl.local_prefill_max_tokens(odd, 1e-6, 10.0, 10.0, kv_dtype_bytes=0.5, max_penalty=0.21)
    assert tie == 9, f"a 1% margin at 2.5 B a token: 10 tokens tie and pay, want 9, got {tie!r} (3 B: None)"


@task9
@pytest.mark.parametrize("handoff_ms, max_penalty, want", [
    (0.0, 0.5, 0), (0.0, 0.25, 0), (1.0, 0.25, None), (0.0, 0.1875, None), (1.0, 0.28125, 31), (5.0, 0.0, None),
], ids=["no-handoff", "no-handoff-at-limit", "handoff-at-limit", "over-limit", "near-limit", "zero-limit"])  # fmt: skip
def test_edges_of_the_knob(impl, handoff_ms, max_penalty, want):
    got = impl.local_prefill_max_tokens(
        WIRE_TOY, 1, 1000.0, handoff_ms, kv_dtype_bytes=1, max_penalty=max_penalty
    )
    assert got == want, (
        f"wire 25% a token, handoff {handoff_ms} ms, limit {max_penalty:.0%}: want {want!r}, got {got!r}"
    )


@task9
@given(handoff=st.floats(0.1, 200.0), tps=st.floats(100.0, 100_000.0), gbps=st.sampled_from([25, 100, 200, 400, 3600]),
       limit=st.floats(0.02, 0.5))  # fmt: skip
def test_the_knob_splits_paying_from_not_paying(impl, handoff, tps, gbps, limit):
    got = impl.local_prefill_max_tokens("qwen2.5-7b", gbps, tps, handoff, max_penalty=limit)
    per_token_ms = 57_344 * 8 / (gbps * 1e9) * 1e3

    def penalty(n):
        return (handoff + n * per_token_ms) / (n * 1e3 / tps)

    if per_token_ms * tps / 1e3 >= limit:
        assert got is None, f"the wire alone is >= {limit:.1%} a token: want None, got {got!r}"
        return
    assert got is not None and got >= 0 and penalty(got + 1) <= limit * (1 + 1e-9), got
    if got > 0:
        assert penalty(got) >= limit * (1 - 1e-9), f"{got} tokens must not pay: {penalty(got)}"


BAD9 = [
    (dict(prefill_tokens_per_s=0.0), ValueError, "prefill_tokens_per_s"),
    (dict(prefill_tokens_per_s=NAN), ValueError, "prefill_tokens_per_s"),
    (dict(prefill_tokens_per_s=True), TypeError, "prefill_tokens_per_s"),
    (dict(handoff_ms=-1.0), ValueError, "handoff_ms"), (dict(handoff_ms=INF), ValueError, "handoff_ms"),
    (dict(max_penalty=-0.1), ValueError, "max_penalty"), (dict(max_penalty=NAN), ValueError, "max_penalty"),
    (dict(link_gbps=0), ValueError, "link_gbps"), (dict(link_gbps="token-ring"), ValueError, "link_gbps"),
    (dict(efficiency=0.0), ValueError, "efficiency"), (dict(model="llama-9"), ValueError, "model"),
    (dict(kv_dtype_bytes=0), ValueError, "kv_dtype_bytes"), (dict(kv_dtype_bytes=True), TypeError, "kv_dtype_bytes"),
    (dict(kv_dtype_bytes=-0.5), ValueError, "kv_dtype_bytes"),
]  # fmt: skip


@task9
@pytest.mark.parametrize("bad, exc, name", BAD9, ids=[f"{n}-{i}" for i, (*_, n) in enumerate(BAD9)])
@pytest.mark.parametrize("link", ["ib-hdr", "100gbe"])
def test_knob_bad_input_names_the_argument(impl, bad, exc, name, link):
    with raises(exc, name):
        knob(impl, **({"link_gbps": link} | bad))

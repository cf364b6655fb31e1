"""Lab 03 spec: the economics of disaggregation. Run one task with `pytest -m lab03_task2`.

The numbers pinned here are the phase's: Llama-3-8B, a 2048-token fp16 prompt = 256 MiB of KV;
~11 ms on InfiniBand-class fabric, ~215 ms on 10 GbE; colocated ITL p50 12 ms vs p99 38 ms.
"""

from __future__ import annotations

import math

import pytest
from disagg_tables import FABRICS, MODELS, ModelShape, Verdict
from hypothesis import given
from hypothesis import strategies as st

MiB = 1024 * 1024
PROMPT_8B_BYTES = 268_435_456  # 2048 tokens x 128 KiB: the phase's 256 MiB
PHASE = dict(ttft_ms=200.0, itl_p50_ms=12.0, itl_p99_ms=38.0)  # colocated figures of the phase

task1 = pytest.mark.lab03_task1
task2 = pytest.mark.lab03_task2
task3 = pytest.mark.lab03_task3
task4 = pytest.mark.lab03_task4
task5 = pytest.mark.lab03_task5

# A toy geometry chosen so every threshold edge is an exact float: 1 layer x 1 KV head x head_dim 625
# x 2 (K and V) x 1 byte = 1250 B/token; 1000 tokens = 1.25 MB = 10 ms at 1 Gb/s.
EDGE_MODEL = ModelShape("edge-toy", layers=1, kv_heads=1, head_dim=625)


# ---------------------------------------------------------------- task 1: kv_bytes_per_token
@task1
def test_llama3_8b_fp16_is_128_kib_per_token(impl):
    got = impl.kv_bytes_per_token("llama-3-8b")
    assert got == 131_072, (
        f"Llama-3-8B fp16 = 2 x 32 layers x 8 kv heads x 128 x 2 B = 131072 B/token, got {got}"
    )
    assert impl.kv_bytes_per_token(MODELS["llama-3-8b"], 2) == got, "a ModelShape and its name must agree"
    assert 2048 * got == PROMPT_8B_BYTES, f"2048 tokens must be 256 MiB, got {2048 * got} bytes"


@task1
@pytest.mark.parametrize(
    "name, fp16, fp8",
    [
        ("llama-3-70b", 327_680, 163_840),  # 320 KiB / 160 KiB
        ("mistral-7b", 131_072, 65_536),
        ("qwen2.5-7b", 57_344, 28_672),  # 56 KiB: 28 layers, 4 KV heads
        ("deepseek-v3", 70_272, 35_136),  # MLA: 61 x (512 + 64), ONE latent, no factor 2
    ],
)
def test_model_table_per_token_bytes(impl, name, fp16, fp8):
    got16, got8 = impl.kv_bytes_per_token(name, 2), impl.kv_bytes_per_token(name, 1)
    assert (got16, got8) == (fp16, fp8), f"{name}: want fp16/fp8 = {fp16}/{fp8} B/token, got {got16}/{got8}"


@task1
def test_k_and_v_are_both_counted(impl):
    one = ModelShape("one", layers=1, kv_heads=1, head_dim=1)
    got = impl.kv_bytes_per_token(one, 1)
    assert got == 2, f"1 layer x 1 head x dim 1 x 1 B caches K AND V = 2 bytes, got {got}"


@task1
def test_mla_has_no_factor_two_and_gqa_does(impl):
    mla = ModelShape(
        "mla-toy", layers=2, kv_heads=0, head_dim=0, attention="mla", mla_latent_dim=6, mla_rope_dim=2
    )
    gqa = ModelShape("gqa-toy", layers=2, kv_heads=1, head_dim=8)
    assert impl.kv_bytes_per_token(mla, 1) == 16, "MLA caches one latent of (6+2) per layer: 2 x 8 = 16 bytes"
    assert impl.kv_bytes_per_token(gqa, 1) == 32, "GQA caches K and V of 8 per layer: 2 x 2 x 8 = 32 bytes"


@task1
@given(
    layers=st.integers(1, 128),
    kv_heads=st.integers(1, 64),
    head_dim=st.sampled_from([32, 64, 80, 96, 128, 256]),
    dtype_bytes=st.sampled_from([1, 2, 4]),
)
def test_gqa_formula_over_shapes(impl, layers, kv_heads, head_dim, dtype_bytes):
    shape = ModelShape("h", layers=layers, kv_heads=kv_heads, head_dim=head_dim)
    want = 2 * layers * kv_heads * head_dim * dtype_bytes
    got = impl.kv_bytes_per_token(shape, dtype_bytes)
    assert got == want, f"2 x {layers} x {kv_heads} x {head_dim} x {dtype_bytes} = {want}, got {got}"


@task1
@pytest.mark.parametrize("bad", ["llama-4-9000b", "", "gpt"])
def test_unknown_model_is_a_value_error_naming_model(impl, bad):
    with pytest.raises(ValueError, match="model"):
        impl.kv_bytes_per_token(bad)


@task1
@pytest.mark.parametrize("bad", [0, -2])
def test_bad_dtype_bytes_is_a_value_error(impl, bad):
    with pytest.raises(ValueError, match="dtype_bytes"):
        impl.kv_bytes_per_token("llama-3-8b", bad)


# ---------------------------------------------------------------- task 2: transfer_ms
@task2
@pytest.mark.parametrize(
    "fabric, want_ms",
    [
        ("ib-hdr", 10.737),  # "~11 ms, invisible"
        ("10gbe", 214.748),  # "doubles TTFT"
        ("25gbe", 85.899),
        ("100gbe", 21.475),
        ("ib-ndr", 5.369),
        ("400gbe", 5.369),
        ("pcie5-x16", 4.261),
        ("nvlink4", 0.597),
    ],
)
def test_256_mib_over_each_fabric(impl, fabric, want_ms):
    got = impl.transfer_ms(PROMPT_8B_BYTES, fabric)
    assert got == pytest.approx(want_ms, abs=1e-3), f"256 MiB over {fabric}: want {want_ms} ms, got {got}"
    by_rate = impl.transfer_ms(PROMPT_8B_BYTES, FABRICS[fabric].gbps)
    assert by_rate == pytest.approx(got), "a fabric name and its Gb/s must give the same time"


@task2
def test_bits_are_not_bytes(impl):
    got = impl.transfer_ms(1e9, 8)
    assert got == pytest.approx(1000.0), (
        f"1 GB = 8 Gbit takes 1000 ms on an 8 Gb/s link, got {got} ms "
        "(125 ms means Gb/s was taken as GB/s; 1e6 means megabits)"
    )


@task2
def test_efficiency_divides_the_rate(impl):
    full = impl.transfer_ms(PROMPT_8B_BYTES, "ib-hdr")
    half = impl.transfer_ms(PROMPT_8B_BYTES, "ib-hdr", efficiency=0.5)
    assert half == pytest.approx(2 * full), (
        f"at 50% of line rate the copy takes twice as long: {full} -> {half}"
    )
    assert impl.transfer_ms(0, "10gbe") == 0.0, "nothing to ship takes no time"


@task2
@given(nbytes=st.integers(0, 2**40), gbps=st.floats(0.1, 10_000), eff=st.floats(0.01, 1.0))
def test_transfer_formula(impl, nbytes, gbps, eff):
    got = impl.transfer_ms(nbytes, gbps, eff)
    want = nbytes * 8 / (gbps * 1e9 * eff) * 1e3
    assert got == pytest.approx(want, rel=1e-9), (
        f"ms = bytes x 8 / (Gb/s x 1e9 x eff) x 1e3 = {want}, got {got}"
    )


@task2
@pytest.mark.parametrize(
    "args, kwargs, names",
    [
        ((MiB, 0), {}, "link_gbps"),
        ((MiB, -10), {}, "link_gbps"),
        ((MiB, "token-ring"), {}, "link_gbps"),
        ((MiB, 10), {"efficiency": 0.0}, "efficiency"),
        ((MiB, 10), {"efficiency": 1.01}, "efficiency"),
        ((MiB, 10), {"efficiency": -0.5}, "efficiency"),
        ((-1, 10), {}, "nbytes"),
    ],
)
def test_transfer_bad_input(impl, args, kwargs, names):
    with pytest.raises(ValueError, match=names):
        impl.transfer_ms(*args, **kwargs)


# ---------------------------------------------------------------- task 3: interference_tax_ms
@task3
def test_phase_tax_per_request(impl):
    got = impl.interference_tax_ms(257, 12.0, 38.0)
    assert got == pytest.approx(256 * 26.0), (
        f"257 output tokens = 256 gaps, each taxed p99 - p50 = 26 ms: want 6656 ms, got {got}"
    )


@task3
@pytest.mark.parametrize("tokens, want", [(0, 0.0), (1, 0.0), (2, 26.0), (3, 52.0)])
def test_the_first_token_has_no_gap(impl, tokens, want):
    got = impl.interference_tax_ms(tokens, 12.0, 38.0)
    assert got == pytest.approx(want), (
        f"{tokens} output tokens -> {max(tokens - 1, 0)} gaps (the first token comes from prefill): "
        f"want {want}, got {got}"
    )


@task3
def test_no_spike_no_tax(impl):
    assert impl.interference_tax_ms(500, 12.0, 12.0) == 0.0, "p99 == p50: decode is never stalled, no tax"


@task3
def test_tax_budget_exceeds_a_fast_toll_but_not_a_slow_one_for_short_answers(impl):
    long_answer = impl.interference_tax_ms(257, 12.0, 38.0)
    short_answer = impl.interference_tax_ms(5, 12.0, 38.0)
    toll_ib, toll_10g = 10.737, 214.748  # 256 MiB on IB HDR / 10 GbE (task 2)
    assert long_answer > 100 * toll_ib, (
        f"a 257-token answer's tax budget {long_answer} ms (per gap) vs an IB toll {toll_ib} ms (once) must be >100x"
    )
    assert short_answer < toll_10g, (
        f"a 5-token answer's tax budget {short_answer} ms must be < a 10 GbE toll {toll_10g} ms"
    )


@task3
@pytest.mark.parametrize(
    "args, name",
    [((-1, 12.0, 38.0), "output_tokens"), ((10, -1.0, 38.0), "itl_p50_ms"), ((10, 12.0, 11.0), "itl_p99_ms")],
)
def test_tax_bad_input(impl, args, name):
    with pytest.raises(ValueError, match=name):
        impl.interference_tax_ms(*args)


# ---------------------------------------------------------------- task 4: penalty_ratio
@task4
def test_penalty_of_the_phase_fabrics(impl):
    ib = impl.penalty_ratio(10.737, 200.0)  # 256 MiB on IB HDR (task 2) on a 200 ms TTFT
    eth = impl.penalty_ratio(214.748, 200.0)  # 256 MiB on 10 GbE
    assert ib == pytest.approx(0.0537, abs=1e-4), f"10.7 ms on a 200 ms TTFT is +5.4%, got {ib:.4f}"
    assert eth == pytest.approx(1.0737, abs=1e-4), (
        f"214.7 ms on a 200 ms TTFT doubles it (+107%), got {eth:.4f}"
    )


@task4
@given(transfer=st.floats(0, 1e6), ttft=st.floats(1e-3, 1e6))
def test_penalty_is_toll_over_ttft(impl, transfer, ttft):
    got = impl.penalty_ratio(transfer, ttft)
    assert got == pytest.approx(transfer / ttft), f"penalty = toll / TTFT = {transfer}/{ttft}, got {got}"


@task4
@pytest.mark.parametrize(
    "args, name", [((1.0, 0.0), "ttft_ms"), ((1.0, -5.0), "ttft_ms"), ((-1.0, 100.0), "transfer_ms")]
)
def test_penalty_bad_input(impl, args, name):
    with pytest.raises(ValueError, match=name):
        impl.penalty_ratio(*args)


# ---------------------------------------------------------------- task 5: should_disaggregate
@task5
def test_phase_yes_on_infiniband(impl):
    d = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", **PHASE)
    assert d.verdict == Verdict.YES, f"8B/2048 tokens on IB HDR with a 38/12 ms ITL spike -> YES, got {d}"
    assert d.kv_bytes == PROMPT_8B_BYTES, f"freight must be 256 MiB, got {d.kv_bytes}"
    assert d.transfer_ms == pytest.approx(10.737, abs=1e-3), f"toll ~10.7 ms, got {d.transfer_ms}"
    assert d.penalty_ratio == pytest.approx(10.737 / 200, abs=1e-5), (
        f"penalty = toll / TTFT = 10.737/200, got {d}"
    )
    assert d.spike_ratio == pytest.approx(38 / 12), f"spike ratio = ITL p99/p50 = 38/12, got {d}"
    assert d.tax_ms == pytest.approx(256 * 26.0), f"tax = 256 gaps x (38 - 12) ms = 6656, got {d}"


@task5
def test_phase_no_slow_link_on_10gbe(impl):
    d = impl.should_disaggregate("llama-3-8b", 2048, 257, "10gbe", **PHASE)
    assert d.verdict == Verdict.NO_SLOW_LINK, f"a 215 ms toll doubles a 200 ms TTFT -> NO_SLOW_LINK, got {d}"


@task5
@pytest.mark.parametrize("fabric", ["10gbe", "ib-hdr", "nvlink4"])
def test_no_disease_whatever_the_wire(impl, fabric):
    d = impl.should_disaggregate(
        "llama-3-8b", 2048, 257, fabric, ttft_ms=200.0, itl_p50_ms=12.0, itl_p99_ms=13.0
    )
    assert d.verdict == Verdict.NO_NO_DISEASE, f"p99 13 vs p50 12 ms: no spike to cure on {fabric}, got {d}"


@task5
def test_fp8_kv_turns_a_slow_link_into_yes(impl):
    fp16 = impl.should_disaggregate("llama-3-8b", 2048, 257, "100gbe", **PHASE, kv_dtype_bytes=2)
    fp8 = impl.should_disaggregate("llama-3-8b", 2048, 257, "100gbe", **PHASE, kv_dtype_bytes=1)
    assert (fp16.verdict, fp8.verdict) == (Verdict.NO_SLOW_LINK, Verdict.YES), (
        f"100 GbE: fp16 toll {fp16.transfer_ms:.1f} ms (10.7%) is too much, fp8 {fp8.transfer_ms:.1f} ms (5.4%) "
        f"is not - compression as a topology enabler; got {fp16.verdict}, {fp8.verdict}"
    )


@task5
def test_gqa_turns_a_slow_link_into_yes(impl):
    mha = ModelShape("llama-3-8b-if-mha", layers=32, kv_heads=32, head_dim=128)  # no GQA: 4x the KV heads
    d_mha = impl.should_disaggregate(mha, 2048, 257, "ib-hdr", **PHASE)
    d_gqa = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", **PHASE)
    assert (d_mha.verdict, d_gqa.verdict) == (Verdict.NO_SLOW_LINK, Verdict.YES), (
        f"on IB HDR, 32 KV heads ship 1 GiB ({d_mha.penalty_ratio:.1%}), 8 ship 256 MiB "
        f"({d_gqa.penalty_ratio:.1%}); got {d_mha.verdict}, {d_gqa.verdict}"
    )


@task5
def test_mla_turns_a_slow_link_into_yes(impl):
    # same layer count as DeepSeek-V3, as if it cached full K/V for 8 heads of 128 (GQA)
    gqa = ModelShape("dsv3-if-gqa", layers=61, kv_heads=8, head_dim=128)
    d_gqa = impl.should_disaggregate(gqa, 2048, 257, "100gbe", **PHASE, kv_dtype_bytes=1)
    d_mla = impl.should_disaggregate("deepseek-v3", 2048, 257, "100gbe", **PHASE, kv_dtype_bytes=1)
    assert (d_gqa.verdict, d_mla.verdict) == (Verdict.NO_SLOW_LINK, Verdict.YES), (
        f"MLA's latent ships {d_mla.kv_bytes} B vs {d_gqa.kv_bytes} B; got {d_gqa.verdict}, {d_mla.verdict}"
    )


@task5
def test_penalty_edge_is_inclusive(impl):
    # EDGE_MODEL: 1000 tokens = 1.25 MB = exactly 10 ms at 1 Gb/s; TTFT 100 ms -> penalty exactly 0.10
    at = impl.should_disaggregate(
        EDGE_MODEL, 1000, 10, 1, 100.0, 12.0, 38.0, kv_dtype_bytes=1, max_penalty=0.10
    )
    over = impl.should_disaggregate(
        EDGE_MODEL, 1001, 10, 1, 100.0, 12.0, 38.0, kv_dtype_bytes=1, max_penalty=0.10
    )
    assert at.penalty_ratio == 0.1, f"setup: penalty must be exactly 0.10, got {at.penalty_ratio!r}"
    assert at.verdict == Verdict.YES, (
        f"penalty == max_penalty is acceptable (inclusive edge), got {at.verdict}"
    )
    assert over.verdict == Verdict.NO_SLOW_LINK, f"one more token tips it over, got {over.verdict}"


@task5
def test_spike_edge_is_inclusive(impl):
    at = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", 200.0, 12.0, 18.0, min_spike_ratio=1.5)
    under = impl.should_disaggregate(
        "llama-3-8b", 2048, 257, "ib-hdr", 200.0, 12.0, 17.99, min_spike_ratio=1.5
    )
    assert at.verdict == Verdict.YES, f"p99/p50 == 1.5 is a spike (inclusive edge), got {at.verdict}"
    assert under.verdict == Verdict.NO_NO_DISEASE, (
        f"p99/p50 just under 1.5 is no disease, got {under.verdict}"
    )


@task5
@given(prompt=st.integers(1, 32_768), gbps=st.sampled_from([10, 25, 100, 200, 400, 3600]))
def test_verdict_agrees_with_the_parts(impl, prompt, gbps):
    d = impl.should_disaggregate("llama-3-70b", prompt, 100, gbps, **PHASE)
    toll = prompt * 327_680 * 8 / (gbps * 1e9) * 1e3
    want = Verdict.YES if toll / 200.0 <= 0.10 else Verdict.NO_SLOW_LINK
    assert math.isclose(d.transfer_ms, toll, rel_tol=1e-9), (
        f"toll for {prompt} tokens at {gbps} Gb/s: {toll}, got {d}"
    )
    assert d.verdict == want, f"toll {toll:.2f} ms on 200 ms TTFT -> {want}, got {d.verdict}"


@task5
@pytest.mark.parametrize(
    "model, prompt, link, kwargs, name",
    [
        ("llama-3-8b", -1, "ib-hdr", {}, "prompt_tokens"),
        ("llama-9", 2048, "ib-hdr", {}, "model"),
        ("llama-3-8b", 2048, "carrier-pigeon", {}, "link_gbps"),
        ("llama-3-8b", 2048, 0, {}, "link_gbps"),
        ("llama-3-8b", 2048, "ib-hdr", {"efficiency": 0.0}, "efficiency"),
    ],
)
def test_decision_bad_input(impl, model, prompt, link, kwargs, name):
    with pytest.raises(ValueError, match=name):
        impl.should_disaggregate(model, prompt, 257, link, **PHASE, **kwargs)

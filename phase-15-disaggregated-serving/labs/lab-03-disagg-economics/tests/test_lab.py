"""Lab 03 spec: the economics of disaggregation. Run one task with `pytest -m lab03_task2`.

The numbers pinned here are the phase's: Llama-3-8B, a 2048-token fp16 prompt = 256 MiB of KV;
~11 ms on InfiniBand-class fabric, ~215 ms on 10 GbE; colocated ITL p50 12 ms vs p99 38 ms.
Bad input: bools, strings and None where a number belongs are TypeErrors; NaN, infinity and values
out of range are ValueErrors; either way the message names the argument (the module docstring's promise).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from disagg.tables import ACCELERATORS, FABRICS, MODELS, Accelerator, Fabric, ModelShape, Verdict

MiB = 1024 * 1024
PROMPT_8B_BYTES = 268_435_456  # 2048 tokens x 128 KiB: the phase's 256 MiB
PHASE = dict(ttft_ms=200.0, itl_p50_ms=12.0, itl_p99_ms=38.0)  # colocated figures of the phase

task1 = pytest.mark.lab03_task1
task2 = pytest.mark.lab03_task2
task3 = pytest.mark.lab03_task3
task4 = pytest.mark.lab03_task4
task5 = pytest.mark.lab03_task5
task6 = pytest.mark.lab03_task6
task7 = pytest.mark.lab03_task7

NAN, INF = float("nan"), float("inf")

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


@task1
def test_fp8_halves_and_the_tiny_llama_of_lab02(impl):
    got = impl.kv_bytes_per_token("tiny-llama", 2), impl.kv_bytes_per_token("llama-3-8b", 1)
    assert got == (8_192, 65_536), (
        f"tiny-llama bf16 (8 layers, 4 KV heads, dim 64) = 8192 B/token; 8B fp8 = 65536 (half of fp16); got {got}"
    )


@task1
def test_a_four_bit_cache_is_half_a_byte_per_element(impl):
    got = impl.kv_bytes_per_token("qwen2.5-7b", 0.5)
    assert got == 14_336, f"Qwen2.5-7B with a 4-bit KV cache (0.5 B/element) = 14336 B/token, got {got!r}"


@task1
def test_mla_ignores_the_gqa_fields(impl):
    # an MLA model whose kv_heads/head_dim are filled in anyway: the latent is still all it caches
    mla = ModelShape(
        "mla-filled", layers=3, kv_heads=8, head_dim=128, attention="mla", mla_latent_dim=10, mla_rope_dim=6
    )
    got = impl.kv_bytes_per_token(mla, 2)
    assert got == 3 * 16 * 2, f"MLA: 3 layers x (10 + 6) x 2 B = 96, whatever kv_heads says; got {got}"


@task1
@pytest.mark.parametrize(
    "bad, exc",
    [(True, TypeError), ("2", TypeError), (None, TypeError), (NAN, ValueError), (INF, ValueError)],
    ids=["bool", "str", "None", "nan", "inf"],
)
def test_dtype_bytes_must_be_a_finite_number(impl, bad, exc):
    with pytest.raises(exc, match="dtype_bytes"):
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


@task2
def test_fabric_object_zero_bytes_and_full_efficiency(impl):
    by_object = impl.transfer_ms(PROMPT_8B_BYTES, Fabric("my-ib", 200, "test"))
    assert by_object == pytest.approx(10.737, abs=1e-3), (
        f"a Fabric of 200 Gb/s: want 10.737 ms, got {by_object}"
    )
    at_one = impl.transfer_ms(PROMPT_8B_BYTES, "ib-hdr", efficiency=1.0)
    assert at_one == pytest.approx(10.737, abs=1e-3), f"efficiency 1.0 is valid (line rate), got {at_one}"
    assert impl.transfer_ms(0, "ib-hdr", efficiency=0.01) == 0.0, "zero bytes take 0 ms at any efficiency"


@task2
@pytest.mark.parametrize("eff, factor", [(0.87, 1 / 0.87), (0.25, 4.0)])
def test_efficiency_is_used_not_just_checked(impl, eff, factor):
    full = impl.transfer_ms(MiB, 100)
    got = impl.transfer_ms(MiB, 100, eff)
    assert got == pytest.approx(full * factor), (
        f"at {eff:.0%} of line rate the copy takes {factor:.3f}x as long as at 100%: want {full * factor}, got {got}"
    )


@task2
@pytest.mark.parametrize(
    "args, exc, name",
    [
        ((NAN, 10), ValueError, "nbytes"),
        ((INF, 10), ValueError, "nbytes"),
        (("1024", 10), TypeError, "nbytes"),
        ((MiB, NAN), ValueError, "link_gbps"),
        ((MiB, INF), ValueError, "link_gbps"),
        ((MiB, True), TypeError, "link_gbps"),
        ((MiB, None), TypeError, "link_gbps"),
        ((MiB, 10, NAN), ValueError, "efficiency"),
        ((MiB, 10, True), TypeError, "efficiency"),
        ((MiB, 10, "0.5"), TypeError, "efficiency"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, tuple) else None,
)
def test_transfer_rejects_non_finite_and_non_numbers(impl, args, exc, name):
    with pytest.raises(exc, match=name):
        impl.transfer_ms(*args)


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
        f"{tokens} output tokens -> {max(tokens - 1, 0)} gaps (the wait for the first token is TTFT, "
        f"not a gap): "
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


@task3
def test_a_p50_of_zero_is_valid_for_the_tax(impl):
    got = impl.interference_tax_ms(3, 0.0, 5.0)
    assert got == pytest.approx(10.0), (
        f"p50 0 ms (tokens arrive back to back) is a valid measurement: 2 gaps x 5 ms = 10, got {got}"
    )


@task3
@pytest.mark.parametrize(
    "args, exc, name",
    [
        ((257.0, 12.0, 38.0), TypeError, "output_tokens"),
        ((True, 12.0, 38.0), TypeError, "output_tokens"),
        ((10, NAN, 38.0), ValueError, "itl_p50_ms"),
        ((10, "12", 38.0), TypeError, "itl_p50_ms"),
        ((10, 12.0, NAN), ValueError, "itl_p99_ms"),
        ((10, 12.0, INF), ValueError, "itl_p99_ms"),
        ((10, 12.0, None), TypeError, "itl_p99_ms"),
    ],
)
def test_tax_rejects_non_finite_and_non_numbers(impl, args, exc, name):
    with pytest.raises(exc, match=name):
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


@task4
def test_a_zero_toll_is_valid(impl):
    got = impl.penalty_ratio(0.0, 200.0)
    assert got == 0.0, f"no freight, no toll: penalty 0 (valid input), got {got}"


@task4
@pytest.mark.parametrize(
    "args, exc, name",
    [
        ((1.0, NAN), ValueError, "ttft_ms"),
        ((1.0, INF), ValueError, "ttft_ms"),
        ((1.0, True), TypeError, "ttft_ms"),
        ((1.0, "200"), TypeError, "ttft_ms"),
        ((NAN, 200.0), ValueError, "transfer_ms"),
        ((None, 200.0), TypeError, "transfer_ms"),
    ],
)
def test_penalty_rejects_non_finite_and_non_numbers(impl, args, exc, name):
    with pytest.raises(exc, match=name):
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


@task5
def test_reason_names_the_deciding_number(impl):
    yes = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", **PHASE)
    slow = impl.should_disaggregate("llama-3-8b", 2048, 257, "10gbe", **PHASE)
    calm = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", 200.0, 12.0, 13.0)
    for d, want in [(yes, "5.4%"), (slow, "107.4%"), (calm, "1.08")]:
        assert isinstance(d.reason, str) and want in d.reason, (
            f"{d.verdict}: the docstring promises the reason shows the deciding number {want!r}, got {d.reason!r}"
        )


@task5
def test_every_number_is_carried_whatever_the_verdict(impl):
    d = impl.should_disaggregate("llama-3-8b", 2048, 2, "10gbe", 200.0, 12.0, 13.0)
    assert d.verdict == Verdict.NO_NO_DISEASE, f"p99/p50 = 1.08: no disease, got {d.verdict}"
    got = (d.kv_bytes, round(d.transfer_ms, 3), round(d.penalty_ratio, 4), round(d.spike_ratio, 4), d.tax_ms)
    want = (PROMPT_8B_BYTES, 214.748, 1.0737, 1.0833, pytest.approx(1.0))
    assert got == want, (
        f"a NO_NO_DISEASE decision still carries freight, toll, penalty, spike and tax (2 tokens = 1 gap of "
        f"13 - 12 ms): want {want}, got {got}"
    )


@task5
def test_efficiency_is_passed_to_the_wire(impl):
    full = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", **PHASE, efficiency=1.0)
    half = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", **PHASE, efficiency=0.5)
    assert half.transfer_ms == pytest.approx(2 * full.transfer_ms), (
        f"at 50% efficiency the toll doubles: {full.transfer_ms} -> {half.transfer_ms}"
    )
    assert (full.verdict, half.verdict) == (Verdict.YES, Verdict.NO_SLOW_LINK), (
        f"IB HDR at half its line rate costs 10.7% of a 200 ms TTFT: want YES -> NO_SLOW_LINK, "
        f"got {full.verdict} -> {half.verdict}"
    )


@task5
def test_max_penalty_is_the_callers_limit(impl):
    strict = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", **PHASE, max_penalty=0.05)
    loose = impl.should_disaggregate("llama-3-8b", 2048, 257, "100gbe", **PHASE, max_penalty=0.20)
    assert strict.verdict == Verdict.NO_SLOW_LINK, f"5.4% > a 5% limit -> NO_SLOW_LINK, got {strict.verdict}"
    assert loose.verdict == Verdict.YES, f"10.7% <= a 20% limit -> YES, got {loose.verdict}"
    assert "10.7%" in loose.reason, f"the reason shows the penalty it judged (10.7%), got {loose.reason!r}"


@task5
def test_min_spike_ratio_is_the_callers_threshold(impl):
    picky = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", **PHASE, min_spike_ratio=4.0)
    keen = impl.should_disaggregate(
        "llama-3-8b", 2048, 257, "ib-hdr", 200.0, 12.0, 13.0, min_spike_ratio=1.05
    )
    assert picky.verdict == Verdict.NO_NO_DISEASE, (
        f"3.17 < a threshold of 4 -> no disease, got {picky.verdict}"
    )
    assert keen.verdict == Verdict.YES, f"1.08 >= a threshold of 1.05 -> a disease, got {keen.verdict}"


@task5
def test_zero_prompt_and_zero_output_are_valid(impl):
    d = impl.should_disaggregate("llama-3-8b", 0, 0, "10gbe", **PHASE)
    got = (d.verdict, d.kv_bytes, d.transfer_ms, d.penalty_ratio, d.tax_ms)
    assert got == (Verdict.YES, 0, 0.0, 0.0, 0.0), (
        f"an empty prompt ships nothing (toll 0, even on 10 GbE) and no output has no gaps: got {got}"
    )


@task5
@pytest.mark.parametrize(
    "field, value, exc",
    [
        ("ttft_ms", NAN, ValueError),
        ("ttft_ms", 0.0, ValueError),
        ("ttft_ms", INF, ValueError),
        ("ttft_ms", "200", TypeError),
        ("itl_p50_ms", 0.0, ValueError),
        ("itl_p50_ms", NAN, ValueError),
        ("itl_p99_ms", NAN, ValueError),
        ("itl_p99_ms", 11.0, ValueError),
        ("prompt_tokens", True, TypeError),
        ("prompt_tokens", 2048.0, TypeError),
        ("output_tokens", -1, ValueError),
        ("link_gbps", NAN, ValueError),
        ("link_gbps", INF, ValueError),
        ("max_penalty", NAN, ValueError),
        ("max_penalty", -0.1, ValueError),
        ("max_penalty", True, TypeError),
        ("min_spike_ratio", NAN, ValueError),
        ("min_spike_ratio", 0.5, ValueError),
        ("efficiency", NAN, ValueError),
        ("kv_dtype_bytes", True, TypeError),
    ],
)
def test_decision_rejects_bad_numbers_naming_them(impl, field, value, exc):
    args = dict(model="llama-3-8b", prompt_tokens=2048, output_tokens=257, link_gbps="ib-hdr", **PHASE)
    args[field] = value
    with pytest.raises(exc, match=field.removeprefix("kv_")):  # task 1's message names dtype_bytes
        impl.should_disaggregate(**args)


# ---------------------------------------------------------------- task 6: prefill_ttft_ms
H100 = ACCELERATORS["h100-sxm"].bf16_dense_tflops  # 989 TFLOP/s dense bf16 (datasheet, see disagg.tables)


@task6
@pytest.mark.parametrize("mfu, want_ms", [(0.17, 201.44), (0.55, 62.26), (1.0, 34.24)])
def test_8b_2048_on_an_h100(impl, mfu, want_ms):
    got = impl.prefill_ttft_ms("llama-3-8b", 2048, "h100-sxm", mfu)
    assert got == pytest.approx(want_ms, abs=0.01), (
        f"8B x 2048 tokens = 2 x 8e9 x 2048 (weights) + 1.1e12 (causal attention) = 33.9 TFLOP at "
        f"{mfu:.0%} of 989 TFLOP/s: want {want_ms} ms, got {got}"
    )


@task6
def test_the_verdict_rests_on_the_ttft_it_divides_by(impl):
    pessimistic = impl.prefill_ttft_ms("llama-3-8b", 2048, H100, 0.17)
    realistic = impl.prefill_ttft_ms("llama-3-8b", 2048, H100, 0.55)
    d17 = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", pessimistic, 12.0, 38.0)
    d55 = impl.should_disaggregate("llama-3-8b", 2048, 257, "ib-hdr", realistic, 12.0, 38.0)
    assert (d17.verdict, d55.verdict) == (Verdict.YES, Verdict.NO_SLOW_LINK), (
        f"the same 10.7 ms toll is {d17.penalty_ratio:.1%} of a {pessimistic:.0f} ms TTFT (17% MFU) but "
        f"{d55.penalty_ratio:.1%} of a {realistic:.0f} ms one (55% MFU): want YES -> NO_SLOW_LINK, "
        f"got {d17.verdict} -> {d55.verdict}"
    )


@task6
def test_causal_attention_over_the_model_width(impl):
    # 1 parameter, 2 layers of width 4, 10 tokens, 1000 FLOP/s (1e-9 TFLOP/s) at full use:
    # weights 2 x 1 x 10 = 20 FLOPs; attention 2 layers x (QK^T + AV) x 2 FLOPs x 4 wide x 100/2 pairs = 1600
    toy = ModelShape("toy", layers=2, kv_heads=1, head_dim=2, params_b=1e-9, hidden=4)
    got = impl.prefill_ttft_ms(toy, 10, 1e-9, 1.0)
    assert got == pytest.approx(1620.0), (
        f"want 1620 ms (20 weight FLOPs + 1600 attention FLOPs at 1000 FLOP/s); 3220 counts the full n x n "
        f"(not causal), 820 forgets the AV product, 20 forgets attention; got {got}"
    )


@task6
def test_long_prompts_are_dominated_by_attention(impl):
    got = impl.prefill_ttft_ms("llama-3-8b", 32768, H100, 0.55)
    assert got == pytest.approx(1481.3, abs=0.1), (
        f"32k tokens: weights 524 TFLOP + attention 281 TFLOP at 55% of 989 TFLOP/s = 1481.3 ms, got {got}"
    )


@task6
def test_mfu_and_peak_are_both_used(impl):
    base = impl.prefill_ttft_ms("qwen2.5-7b", 4096, "a100-sxm", 0.5)
    assert impl.prefill_ttft_ms("qwen2.5-7b", 4096, "a100-sxm", 0.25) == pytest.approx(2 * base), (
        "half the utilisation, twice the time"
    )
    assert impl.prefill_ttft_ms("qwen2.5-7b", 4096, 312.0, 0.5) == pytest.approx(base), (
        "a100-sxm is 312 TFLOP/s: the name and the number agree"
    )
    chip = Accelerator("twice-an-a100", 624.0, "test")
    assert impl.prefill_ttft_ms("qwen2.5-7b", 4096, chip, 0.5) == pytest.approx(base / 2), (
        "an Accelerator twice as fast halves the time"
    )
    assert impl.prefill_ttft_ms("qwen2.5-7b", 0, chip, 0.5) == 0.0, "no prompt, no prefill"


@task6
def test_moe_counts_activated_parameters(impl):
    got = impl.prefill_ttft_ms("deepseek-v3", 2048, H100, 0.5)
    want = (2 * 37e9 * 2048 + 2 * 61 * 7168 * 2048**2) / (989e12 * 0.5) * 1e3
    assert got == pytest.approx(want), (
        f"DeepSeek-V3: params_b is the 37B activated per token (MoE), width 7168, 61 layers: want "
        f"{want:.1f} ms, got {got}"
    )


@task6
@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(mfu=0.0), ValueError, "mfu"),
        (dict(mfu=1.01), ValueError, "mfu"),
        (dict(mfu=NAN), ValueError, "mfu"),
        (dict(mfu=True), TypeError, "mfu"),
        (dict(peak_tflops=0), ValueError, "peak_tflops"),
        (dict(peak_tflops=-989.0), ValueError, "peak_tflops"),
        (dict(peak_tflops=INF), ValueError, "peak_tflops"),
        (dict(peak_tflops="tpu-v9"), ValueError, "peak_tflops"),
        (dict(prompt_tokens=-1), ValueError, "prompt_tokens"),
        (dict(prompt_tokens=2048.0), TypeError, "prompt_tokens"),
        (dict(model="llama-9"), ValueError, "model"),
        (dict(model=ModelShape("no-flops", layers=1, kv_heads=1, head_dim=1)), ValueError, "model"),
    ],
)
def test_ttft_bad_input(impl, kwargs, exc, name):
    args = dict(model="llama-3-8b", prompt_tokens=2048, peak_tflops="h100-sxm", mfu=0.5) | kwargs
    with pytest.raises(exc, match=name):
        impl.prefill_ttft_ms(**args)


# ---------------------------------------------------------------- task 7: local_prefill_max_tokens
# A toy wire chosen so ties are exact floats: 1 layer x 1 KV head x dim 15625 x 2 x 1 B = 31,250 B/token
# = 250,000 bit = 0.25 ms per token at 1 Gb/s; at 1000 prompt tokens/s prefill takes 1 ms per token, so
# the wire alone costs 25% of TTFT on every token.
WIRE_TOY = ModelShape("wire-toy", layers=1, kv_heads=1, head_dim=15625)


def _knob(impl, **kw):
    args = dict(model="llama-3-8b", link_gbps="ib-hdr", prefill_tokens_per_s=10_000.0, handoff_ms=5.0) | kw
    return impl.local_prefill_max_tokens(**args)


@task7
def test_8b_on_infiniband(impl):
    got = _knob(impl)
    assert isinstance(got, int) and not isinstance(got, bool) and got == 1051, (
        "8B fp16 on IB HDR, 10k prompt tokens/s, 5 ms handoff, 10%: the wire takes 5.24% of TTFT per token, "
        f"the 5 ms handoff needs the other 4.76% of n x 0.1 ms -> n >= 1052 pays; want the int 1051, got {got!r}"
    )


@task7
def test_a_wire_slower_than_the_limit_never_pays(impl):
    got = _knob(impl, link_gbps="100gbe")
    assert got is None, (
        f"on 100 GbE the KV of each token takes 10.5% of its prefill time: no prompt length pays -> None, "
        f"got {got!r}"
    )


@task7
def test_the_keyword_arguments_are_used(impl):
    got = {
        "fp8 on 100gbe": _knob(impl, link_gbps="100gbe", kv_dtype_bytes=1),
        "ib-hdr at 50%": _knob(impl, efficiency=0.5),
        "20% limit": _knob(impl, max_penalty=0.2),
        "5000 tok/s": _knob(impl, prefill_tokens_per_s=5000.0),
        "20 ms handoff": _knob(impl, handoff_ms=20.0),
    }
    want = {
        "fp8 on 100gbe": 1051,
        "ib-hdr at 50%": None,
        "20% limit": 338,
        "5000 tok/s": 338,
        "20 ms handoff": 4204,
    }
    assert got == want, f"each argument moves the knob (want {want}), got {got}"


@task7
def test_the_exact_tie_pays(impl):
    # 100 ms handoff, 50% limit: at 400 tokens the toll is 100 + 100 ms = exactly 50% of 400 ms -> pays
    got = impl.local_prefill_max_tokens(WIRE_TOY, 1, 1000.0, 100.0, kv_dtype_bytes=1, max_penalty=0.5)
    assert got == 399, (
        f"a 400-token prompt's toll is exactly the limit, which pays (inclusive): the longest local prompt is "
        f"399, got {got!r} (400 means the tie was counted as not paying, e.g. floor instead of ceil - 1)"
    )


@task7
@pytest.mark.parametrize(
    "handoff_ms, max_penalty, want",
    # limits are binary fractions so every way of computing the tie is exact (0.26 - 0.25 is not 0.01)
    [(0.0, 0.5, 0), (0.0, 0.25, 0), (1.0, 0.25, None), (0.0, 0.1875, None), (1.0, 0.28125, 31)],
    ids=["no-handoff", "no-handoff-wire-at-limit", "handoff-wire-at-limit", "wire-over-limit", "near-limit"],
)
def test_edges_of_the_knob(impl, handoff_ms, max_penalty, want):
    got = impl.local_prefill_max_tokens(
        WIRE_TOY, 1, 1000.0, handoff_ms, kv_dtype_bytes=1, max_penalty=max_penalty
    )
    assert got == want, (
        f"wire share 25% per token, handoff {handoff_ms} ms, limit {max_penalty:.0%}: want {want!r} (0 = every "
        f"prompt goes remote, None = none does), got {got!r}"
    )


@task7
@given(
    handoff=st.floats(0.1, 200.0),
    tps=st.floats(100.0, 100_000.0),
    gbps=st.sampled_from([25, 100, 200, 400, 3600]),
    limit=st.floats(0.02, 0.5),
)
def test_the_knob_splits_paying_from_not_paying(impl, handoff, tps, gbps, limit):
    got = impl.local_prefill_max_tokens("qwen2.5-7b", gbps, tps, handoff, max_penalty=limit)
    per_token_ms = 57_344 * 8 / (gbps * 1e9) * 1e3

    def penalty(n):
        return (handoff + n * per_token_ms) / (n * 1e3 / tps)

    if per_token_ms * tps / 1e3 >= limit:
        assert got is None, f"the wire alone is >= {limit:.1%} per token: want None, got {got!r}"
        return
    assert got is not None and got >= 0, f"a wire under the limit pays for long enough prompts, got {got!r}"
    assert penalty(got + 1) <= limit * (1 + 1e-9), f"{got + 1} tokens must pay: penalty {penalty(got + 1)}"
    if got > 0:
        assert penalty(got) >= limit * (1 - 1e-9), f"{got} tokens must not pay: penalty {penalty(got)}"


@task7
@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(prefill_tokens_per_s=0.0), ValueError, "prefill_tokens_per_s"),
        (dict(prefill_tokens_per_s=NAN), ValueError, "prefill_tokens_per_s"),
        (dict(prefill_tokens_per_s=True), TypeError, "prefill_tokens_per_s"),
        (dict(handoff_ms=-1.0), ValueError, "handoff_ms"),
        (dict(handoff_ms=INF), ValueError, "handoff_ms"),
        (dict(max_penalty=-0.1), ValueError, "max_penalty"),
        (dict(max_penalty=NAN), ValueError, "max_penalty"),
        (dict(link_gbps=0), ValueError, "link_gbps"),
        (dict(efficiency=0.0), ValueError, "efficiency"),
        (dict(model="llama-9"), ValueError, "model"),
    ],
)
def test_knob_bad_input(impl, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        _knob(impl, **kwargs)

"""Tasks 13-14: per-instance capacity and the prefill:decode split, analytically; then the cheapest mix
of hardware. `pytest -m lab03_task13`, `-m lab03_task14`.

Task 13 is graded against DistServe's queueing model (OSDI'24, section 3.1, Eq. 1) and its Figure 1
split, and against the serving twin's planner: ``plans/reference.json`` records, for four workloads on
an H100, the goodput of every split of 4 GPUs as fleetsim.planner finds it by simulation
(``tools/plan_reference.py``); your analytic split must be the twin's best and its goodput within 25%.
Task 14 is graded against the dated price table (disagg.tables.ACCELERATORS) and Splitwise's result
that a fleet may pay less with different GPUs for the two phases.
"""

from __future__ import annotations

import json
import math

import pytest

from disagg.tables import ACCELERATORS, Capacity, FleetCost, Offer, StepModel
from disagg.testing import INF, NAN, raises
from fleetsim.plans import REFERENCE_FILE
from fleetsim.profile import LinearProfile, h100_profile

task13 = pytest.mark.lab03_task13
CAPACITY_ROWS = json.loads(REFERENCE_FILE.read_text())["capacity"]
task14 = pytest.mark.lab03_task14


def mean_ttft_ms(rate_rps: float, d_ms: float) -> float:
    """DistServe Eq. 1 (M/D/1, one device, FCFS, no batching): Avg_TTFT = D + R D^2 / (2 (1 - R D))."""
    r = rate_rps / 1e3
    return d_ms + r * d_ms * d_ms / (2 * (1 - r * d_ms))


# ---------------------------------------------------------------- task 13: pd_capacity
@task13
@pytest.mark.parametrize("d_ms, slo", [(100.0, 300.0), (100.0, 101.0), (37.5, 1000.0), (500.0, 4000.0)])
def test_prefill_capacity_is_where_distserves_mean_ttft_meets_the_slo(impl, d_ms, slo):
    step = StepModel(fixed_ms=d_ms / 2, per_prefill_token_ms=d_ms / 2 / 800)  # an 800-token prompt takes d_ms
    cap = impl.pd_capacity(step, 800, 10, slo, 1000.0, 2)
    assert isinstance(cap, Capacity), cap
    assert 0 < cap.prefill_rps < 1e3 / d_ms, f"below the service rate 1/D: {cap}"
    assert mean_ttft_ms(cap.prefill_rps, d_ms) == pytest.approx(slo, rel=1e-6), (
        f"at your {cap.prefill_rps:.4f} req/s Eq. 1 gives a mean TTFT of {mean_ttft_ms(cap.prefill_rps, d_ms):.3f} ms, "
        f"not the SLO {slo}"
    )


@task13
@pytest.mark.parametrize("d_ms, slo", [(100.0, 300.0), (400.0, 1000.0)])
def test_the_prompts_step_pays_for_its_attention(impl, d_ms, slo):
    # a 2000-token prompt scores 2000 x 2001 / 2 = 2,001,000 causal pairs; half its step is fixed, half attention
    step = StepModel(fixed_ms=d_ms / 2, per_prefill_pair_ms=d_ms / 2 / 2_001_000)
    cap = impl.pd_capacity(step, 2000, 10, slo, 1000.0, 2)
    assert 0 < cap.prefill_rps < 1e3 / d_ms, (
        f"not below the service rate 1/D = {1e3 / d_ms:.2f} req/s of the prompt's {d_ms} ms step: {cap}"
    )
    assert mean_ttft_ms(cap.prefill_rps, d_ms) == pytest.approx(slo, rel=1e-6), (
        f"the prompt's step is {d_ms} ms with its attention; your {cap.prefill_rps:.4f} req/s gives a mean "
        f"TTFT of {mean_ttft_ms(cap.prefill_rps, d_ms):.3f} ms by Eq. 1, not the SLO {slo}"
    )
    over = impl.pd_capacity(step, 2000, 10, d_ms * 0.99, 1000.0, 2)
    assert over.prefill_rps == 0.0, f"the {d_ms} ms step alone is over a {d_ms * 0.99} ms SLO: {over}"


@task13
@pytest.mark.parametrize("slo", [99.0, 100.0])
def test_a_prompt_slower_than_the_ttft_slo_has_no_prefill_capacity(impl, slo):
    cap = impl.pd_capacity(StepModel(fixed_ms=100.0), 64, 10, slo, 1000.0, 4)
    assert cap.prefill_rps == 0.0 and cap.goodput_rps == 0.0, cap
    assert (cap.prefill, cap.decode) == (1, 3), (
        f"every split serves nothing: the tie goes to fewer prefill, each role >= 1: {cap}"
    )


@task13
def test_decode_capacity_is_the_largest_batch_within_the_itl_slo(impl):
    # 20 ms + 0.5 ms a sequence: 20 sequences make exactly 30 ms; each holds its seat for 100 steps
    cap = impl.pd_capacity(StepModel(20.0, 0.5), 64, 100, 1e6, 30.0, 2)
    assert cap.decode_rps == pytest.approx(20 / (100 * 0.030)), (
        f"20 seats, each freed every 100 x 30 ms: {cap}"
    )
    capped = impl.pd_capacity(StepModel(20.0, 0.5), 64, 100, 1e6, 30.0, 2, max_batch=10)
    assert capped.decode_rps == pytest.approx(10 / (100 * 0.025)), (
        f"max_batch 10: 10 seats of 25 ms steps: {capped}"
    )
    none = impl.pd_capacity(StepModel(31.0, 0.5), 64, 100, 1e6, 30.0, 2)
    assert none.decode_rps == 0.0, f"even one sequence breaks 30 ms: {none}"


@task13
def test_a_prefill_instance_runs_no_decodes(impl):
    # 50 ms a step + 50 ms per decoding sequence: the prompt's step on a prefill instance is 50 ms
    cap = impl.pd_capacity(StepModel(50.0, 50.0), 64, 10, 300.0, 1000.0, 2)
    assert cap.prefill_rps > 0 and mean_ttft_ms(cap.prefill_rps, 50.0) == pytest.approx(300.0, rel=1e-6), (
        f"a 50 ms prompt step, mean TTFT 300 ms at your rate? {cap}"
    )


class GrowsWithTheSquare:
    """A step model whose decode step grows with the square of the batch (10 ms + 0.1 ms x batch^2):
    such a step still never gets faster by carrying more, but the batch that completes most requests
    is not the largest one the ITL SLO allows."""

    def step_ms(self, prefill_tokens, prefill_pairs, decode_seqs, decode_context=0, joins=0):
        return 10.0 + 0.1 * decode_seqs**2 + prefill_tokens


@task13
def test_the_best_decode_batch_need_not_be_the_largest(impl):
    # ITL 100 ms allows up to 30 sequences (100 ms steps: 0.3 a ms); 10 sequences in 20 ms steps
    # complete 0.5 a ms - the most of any batch. 10 steps a request: 50 req/s
    cap = impl.pd_capacity(GrowsWithTheSquare(), 64, 10, 1e6, 100.0, 2)
    assert cap.decode_rps == pytest.approx(50.0), f"10 seats of 20 ms steps complete the most: {cap}"


@task13
def test_decode_steps_carry_every_running_requests_context(impl):
    # 20 ms + 1 us per cached token; each request attends to 1000 + 100 / 2 = 1050 tokens on average
    prof = LinearProfile("ctx", 20.0, per_decode_context_ms=0.001)
    cap = impl.pd_capacity(prof, 1000, 100, 1e6, 30.0, 2)
    b = math.floor(10.0 / 1.05)  # 9 sequences: 29.45 ms; 10 would be 30.5
    assert cap.decode_rps == pytest.approx(b / (100 * (20 + 0.00105 * b * 1000) / 1e3), rel=1e-3), cap


@task13
def test_distserves_figure_1_split(impl):
    """DistServe Fig. 1: prefill-only 5.6 req/s and decode-only 10 req/s per A100 -> 2 prefill GPUs and 1
    decode GPU serve 10 req/s, 3.3 per GPU. Here a step model with those capacities: a 100 ms step,
    a mean-TTFT SLO at which M/D/1 allows 5.6 req/s, and 10 decode seats of 10 steps each."""
    slo = mean_ttft_ms(5.6, 100.0)
    cap = impl.pd_capacity(StepModel(fixed_ms=100.0), 512, 10, slo, 100.0, 3, max_batch=10)
    assert (cap.prefill_rps, cap.decode_rps) == pytest.approx((5.6, 10.0), rel=1e-6), cap
    assert (cap.prefill, cap.decode) == (2, 1) and cap.goodput_rps / 3 == pytest.approx(3.33, abs=0.01), cap


@task13
def test_the_split_maximises_the_smaller_pool_and_ties_go_to_fewer_prefill(impl):
    # prefill capacity == decode capacity; of 3 instances 1:2 and 2:1 both serve one instance's worth
    slo = mean_ttft_ms(5.0, 100.0)
    cap = impl.pd_capacity(StepModel(fixed_ms=100.0), 64, 20, slo, 100.0, 3, max_batch=10)
    assert (cap.prefill_rps, cap.decode_rps) == pytest.approx((5.0, 5.0), rel=1e-6)
    assert (cap.prefill, cap.decode, cap.goodput_rps) == (1, 2, pytest.approx(5.0)), cap
    five = impl.pd_capacity(StepModel(fixed_ms=100.0), 64, 20, slo, 100.0, 5, max_batch=10)
    assert (five.prefill, five.decode) == (2, 3) and five.goodput_rps == pytest.approx(10.0), five


@task13
@pytest.mark.parametrize("row", CAPACITY_ROWS, ids=lambda r: f"{r['prompt_tokens']}x{r['output_tokens']}")
def test_your_split_is_the_twins_best_split(impl, row):
    cap = impl.pd_capacity(h100_profile("llama-3-8b"), row["prompt_tokens"], row["output_tokens"], row["ttft_slo_ms"],
                           row["itl_slo_ms"], row["instances"])  # fmt: skip
    split = f"{cap.prefill}:{cap.decode}"
    twin = row["twin_goodput_by_split"]
    assert split == row["best"], (
        f"the twin's goodput by split (req/s): {twin}; yours {split} at {cap.goodput_rps:.2f}"
    )
    assert cap.goodput_rps == pytest.approx(twin[split], rel=0.25), (
        f"twin {twin[split]} req/s at {split}, yours {cap}"
    )


BAD13 = [
    (dict(prompt_tokens=0), ValueError, "prompt_tokens"), (dict(prompt_tokens=512.0), TypeError, "prompt_tokens"),
    (dict(output_tokens=0), ValueError, "output_tokens"), (dict(output_tokens=True), TypeError, "output_tokens"),
    (dict(ttft_slo_ms=0.0), ValueError, "ttft_slo_ms"), (dict(ttft_slo_ms=NAN), ValueError, "ttft_slo_ms"),
    (dict(itl_slo_ms=-1.0), ValueError, "itl_slo_ms"), (dict(itl_slo_ms=INF), ValueError, "itl_slo_ms"),
    (dict(instances=1), ValueError, "instances"), (dict(instances=4.0), TypeError, "instances"),
    (dict(max_batch=0), ValueError, "max_batch"), (dict(max_batch=8.0), TypeError, "max_batch"),
]  # fmt: skip


@task13
@pytest.mark.parametrize("bad, exc, name", BAD13, ids=[f"{n}-{i}" for i, (*_, n) in enumerate(BAD13)])
def test_capacity_bad_input_names_the_argument(impl, bad, exc, name):
    args = dict(prompt_tokens=512, output_tokens=64, ttft_slo_ms=500.0, itl_slo_ms=30.0, instances=4) | bad
    with raises(exc, name):
        impl.pd_capacity(StepModel(10.0, 0.1, 0.01), **args)


@task13
def test_a_split_equal_but_for_float_rounding_is_a_tie(impl):
    # prefill 1/3 req/s (a 100 ms step, the SLO where M/D/1's mean TTFT meets it), decode 1/3 req/s (one
    # seat, 30 steps of 100 ms): 1:2 and 2:1 both serve 1/3 req/s, equal but for the last bit
    slo = mean_ttft_ms(1 / 3, 100.0)
    cap = impl.pd_capacity(StepModel(fixed_ms=100.0), 64, 30, slo, 100.0, 3, max_batch=1)
    assert (cap.prefill_rps, cap.decode_rps) == pytest.approx((1 / 3, 1 / 3), rel=1e-6), cap
    assert (cap.prefill, cap.decode) == (1, 2), f"a tie within a relative 1e-9 goes to fewer prefill: {cap}"


@task13
@pytest.mark.parametrize("bad, name", [
    (dict(ttft_slo_ms=50.0, itl_slo_ms=-1.0), "itl_slo_ms"),  # the prompt's 100 ms step misses the SLO
    (dict(itl_slo_ms=50.0, instances=1), "instances"),  # one sequence's 100 ms step misses the ITL
    (dict(ttft_slo_ms=50.0, itl_slo_ms=50.0, max_batch=0), "max_batch"),  # neither role can serve
], ids=["itl-after-no-prefill", "instances-after-no-decode", "max_batch-after-both"])  # fmt: skip
def test_capacity_validates_before_any_shortcut(impl, bad, name):
    args = dict(prompt_tokens=64, output_tokens=10, ttft_slo_ms=1000.0, itl_slo_ms=1000.0, instances=2) | bad
    with raises(ValueError, name):
        impl.pd_capacity(StepModel(100.0), **args)


@task13
def test_the_smallest_fleet_and_batch_are_valid(impl):
    cap = impl.pd_capacity(StepModel(10.0, 0.1, 0.01), 1, 1, 500.0, 30.0, 2, max_batch=1)
    assert (cap.prefill, cap.decode) == (1, 1) and cap.decode_rps == pytest.approx(1 / 0.0101), cap


# ---------------------------------------------------------------- task 14: cheapest_fleet
H, A = ACCELERATORS["h100-sxm"], ACCELERATORS["a100-sxm"]


def roofline_offers(prefill_h100: float = 10.0, decode_h100: float = 24.0) -> list[Offer]:
    """Prefill is compute bound (capacity ~ peak FLOP/s), decode memory bound (~ HBM bandwidth): the
    A100's capacities scaled from an H100's by the datasheets, priced at the dated list."""
    return [
        Offer("h100-sxm", "prefill", H.price_per_hour, prefill_h100),
        Offer(
            "a100-sxm", "prefill", A.price_per_hour, prefill_h100 * A.bf16_dense_tflops / H.bf16_dense_tflops
        ),
        Offer("h100-sxm", "decode", H.price_per_hour, decode_h100),
        Offer("a100-sxm", "decode", A.price_per_hour, decode_h100 * A.hbm_tb_s / H.hbm_tb_s),
    ]


@task14
def test_splitwise_prompt_on_h100_tokens_on_a100(impl):
    """Splitwise (ISCA'24): 'A100s can be more cost- and power-efficient for the token phase' while the
    prompt phase wants the newer GPU's FLOPs. At $2.69 vs $1.49 an hour, an H100 gives 3.2x the FLOP/s
    for 1.8x the price and 1.6x the bandwidth - less than its price."""
    got = impl.cheapest_fleet(60.0, 256, roofline_offers())
    assert isinstance(got, FleetCost), got
    assert (got.prefill.hardware, got.decode.hardware) == ("h100-sxm", "a100-sxm"), got
    # prefill: 6 H100 (10 req/s each) = $16.14; decode: 5 A100 (14.6 req/s each) = $7.45 (3 H100 would be $8.07)
    assert (got.prefill_instances, got.decode_instances) == (6, 5), got
    assert got.dollars_per_hour == pytest.approx(6 * 2.69 + 5 * 1.49)
    assert got.dollars_per_million_tokens == pytest.approx((6 * 2.69 + 5 * 1.49) / (60 * 3600 * 256) * 1e6)


@task14
def test_the_fewest_instances_that_carry_the_rate(impl):
    offers = [Offer("x", "prefill", 2.0, 2.0), Offer("y", "decode", 1.0, 4.0)]
    exact = impl.cheapest_fleet(8.0, 100, offers)
    assert (exact.prefill_instances, exact.decode_instances) == (4, 2), (
        "8 req/s on 2 req/s instances: exactly 4"
    )
    over = impl.cheapest_fleet(8.5, 100, offers)
    assert (over.prefill_instances, over.decode_instances) == (5, 3), "8.5 req/s needs a fifth and a third"
    tiny = impl.cheapest_fleet(0.001, 100, offers)
    assert (tiny.prefill_instances, tiny.decode_instances, tiny.dollars_per_hour) == (1, 1, 3.0), tiny


@task14
@pytest.mark.parametrize("rate, n", [(2.1, 7), (0.9, 3), (0.7, 7), (2.101, 8), (0.901, 4)])
def test_a_pool_that_reaches_the_rate_but_for_float_rounding_reaches_it(impl, rate, n):
    # 0.3 and 0.1 req/s are not exact in binary: 2.1 / 0.3 is 7.000000000000001, 3 x 0.3 is 0.8999999999999999
    per = 0.1 if rate == 0.7 else 0.3
    got = impl.cheapest_fleet(rate, 100, [Offer("x", "prefill", 1.0, per), Offer("y", "decode", 1.0, per)])
    assert (got.prefill_instances, got.decode_instances) == (n, n), (
        f"{rate} req/s on {per} req/s instances: {n} of them, got {got}"
    )


@task14
@pytest.mark.parametrize(
    "rate, per, n", [(1.0000001, 1.0, 2), (1.5e-10, 1e-10, 2), (3e-10, 1e-10, 3), (1 + 1e-12, 1.0, 1)]
)
def test_the_rounding_allowance_is_a_relative_1e_9(impl, rate, per, n):
    # 1e-7 over the rate is a real shortfall, at any scale; 1e-12 over it is rounding
    got = impl.cheapest_fleet(rate, 1, [Offer("p", "prefill", 1.0, per), Offer("d", "decode", 1.0, per)])
    assert (got.prefill_instances, got.decode_instances) == (n, n), (
        f"{rate} req/s on {per} req/s instances: {n} of them, got {got}"
    )


@task14
def test_pool_costs_equal_but_for_float_rounding_tie(impl):
    # 3 x $1.10 is 3.3000000000000003 in floats, 1 x $3.30 is 3.3: the same price, so the first listed wins
    offers = [
        Offer("small", "prefill", 1.1, 1.0),
        Offer("big", "prefill", 3.3, 3.0),
        Offer("d", "decode", 1.0, 3.0),
    ]
    assert impl.cheapest_fleet(3.0, 1, offers).prefill.hardware == "small"
    assert impl.cheapest_fleet(3.0, 1, [offers[1], offers[0], offers[2]]).prefill.hardware == "big"


@task14
def test_the_cheapest_pool_not_the_cheapest_unit_of_capacity(impl):
    # big: $3/h for 2 req/s ($1.5 per req/s); small: $2/h for 1 req/s ($2 per req/s). Whole instances only:
    offers = [
        Offer("big", "prefill", 3.0, 2.0),
        Offer("small", "prefill", 2.0, 1.0),
        Offer("d", "decode", 1.0, 10.0),
    ]
    one = impl.cheapest_fleet(1.0, 100, offers)
    assert (one.prefill.hardware, one.prefill_instances, one.dollars_per_hour) == ("small", 1, 3.0), (
        f"1 req/s: one small ($2) beats one big ($3), got {one}"
    )
    four = impl.cheapest_fleet(4.0, 100, offers)
    assert (four.prefill.hardware, four.prefill_instances, four.dollars_per_hour) == ("big", 2, 7.0), (
        f"4 req/s: two big ($6) beat four small ($8), got {four}"
    )


@task14
def test_a_price_per_million_output_tokens(impl):
    got = impl.cheapest_fleet(10.0, 256, [Offer("h", "prefill", 2.69, 2.5), Offer("a", "decode", 1.49, 10.0)])
    assert got.dollars_per_hour == pytest.approx(12.25) and got.dollars_per_million_tokens == pytest.approx(
        12.25 / (10 * 3600 * 256) * 1e6), got  # fmt: skip


@task14
def test_ties_go_to_the_first_listed_and_useless_offers_are_skipped(impl):
    offers = [Offer("a", "prefill", 1.0, 1.0), Offer("b", "prefill", 2.0, 2.0), Offer("z", "prefill", 0.0, 0.0),
              Offer("c", "decode", 3.0, 5.0), Offer("d", "decode", 3.0, 5.0)]  # fmt: skip
    got = impl.cheapest_fleet(4.0, 10, offers)
    assert (got.prefill.hardware, got.decode.hardware) == ("a", "c"), got
    assert impl.cheapest_fleet(4.0, 10, offers[::-1]).prefill.hardware == "b", (
        "b is listed first now (same $4)"
    )


@task14
def test_the_callers_offers_are_left_alone(impl):
    offers = roofline_offers()
    before = list(offers)
    impl.cheapest_fleet(60.0, 256, offers)
    assert offers == before, "the list was sorted or changed"
    assert impl.cheapest_fleet(60.0, 256, tuple(offers)).prefill.hardware == "h100-sxm", (
        "any sequence of offers"
    )


BAD14 = [
    (dict(rate_rps=0.0), ValueError, "rate_rps"), (dict(rate_rps=-1.0), ValueError, "rate_rps"),
    (dict(rate_rps=NAN), ValueError, "rate_rps"), (dict(rate_rps=INF), ValueError, "rate_rps"),
    (dict(rate_rps=True), TypeError, "rate_rps"), (dict(output_tokens=0), ValueError, "output_tokens"),
    (dict(output_tokens=2.5), TypeError, "output_tokens"), (dict(offers=[]), ValueError, "offers"),
    (dict(offers=[Offer("h", "prefill", 1.0, 1.0)]), ValueError, "offers"),
    (dict(offers=[Offer("h", "prefill", 1.0, 1.0), Offer("h", "decode", 1.0, 0.0)]), ValueError, "offers"),
    (dict(offers=[*roofline_offers(), Offer("h", "both", 1.0, 1.0)]), ValueError, "offers"),
    (dict(offers=[Offer("h", "prefill", NAN, 1.0), Offer("h", "decode", 1.0, 1.0)]), ValueError, "offers"),
    (dict(offers=[Offer("h", "prefill", 1.0, INF), Offer("h", "decode", 1.0, 1.0)]), ValueError, "offers"),
    (dict(offers=[Offer("h", "prefill", -1.0, 1.0), Offer("h", "decode", 1.0, 1.0)]), ValueError, "offers"),
    (dict(offers=[("h", "prefill", 1.0, 1.0), Offer("h", "decode", 1.0, 1.0)]), TypeError, "offers"),
    (dict(offers=[Offer("h", "prefill", "2.69", 1.0), Offer("h", "decode", 1.0, 1.0)]), TypeError, "offers"),
    (dict(offers=[Offer("h", "prefill", 1.0, 1.0), Offer("h", "decode", 1.0, True)]), TypeError, "offers"),
    (dict(offers=[Offer("z", "prefill", NAN, 0.0), *roofline_offers()]), ValueError, "offers"),  # useless, still checked
    (dict(offers=[Offer("z", "decode", -1.0, 0.0), *roofline_offers()]), ValueError, "offers"),
]  # fmt: skip


@task14
@pytest.mark.parametrize("bad, exc, name", BAD14, ids=[f"{n}-{i}" for i, (*_, n) in enumerate(BAD14)])
def test_cost_bad_input_names_the_argument(impl, bad, exc, name):
    args = dict(rate_rps=10.0, output_tokens=100, offers=roofline_offers()) | bad
    with raises(exc, name):
        impl.cheapest_fleet(**args)

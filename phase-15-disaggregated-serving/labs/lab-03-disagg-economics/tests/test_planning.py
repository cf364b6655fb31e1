"""Tasks 10-12: from simulated (or measured) runs to a fleet decision. `pytest -m lab03_task10`.

Records are lab-02's capture records (labkit.capture.RequestRecord); the serving twin (fleetsim)
writes the same ones. Times in records are seconds; SLOs are milliseconds.
"""

from __future__ import annotations

import pytest

from disagg.testing import INF, NAN, raises
from fleetsim.fleet import Fleet, simulate
from fleetsim.profile import LinearProfile
from fleetsim.workload import poisson
from labkit.capture import RequestRecord, load_capture

task8 = pytest.mark.lab03_task10  # slo_attainment
task9 = pytest.mark.lab03_task11  # goodput
task10 = pytest.mark.lab03_task12  # choose_config


def rec(sent_s, arrivals_s, status=200, error=None):
    return RequestRecord("short", "decode", None, status, sent_s, list(arrivals_s), None, error)


# Binary fractions throughout, so every edge below is exact in floating point.
FINE = rec(0.0, [0.25, 0.3125, 0.375])  # TTFT 250 ms, gaps 62.5 ms
SLOW_FIRST = rec(0.0, [0.625, 0.6875])  # TTFT 625 ms
STALL = rec(1.0, [1.25, 1.3125, 1.5, 1.5625])  # TTFT 250 ms, one 187.5 ms gap
FAILED = rec(0.0, [], status=0, error="ConnectionResetError")


# ---------------------------------------------------------------- task 10: slo_attainment
@task8
def test_attainment_docstring_example(impl):
    got = impl.slo_attainment([FINE, SLOW_FIRST, STALL, FAILED], 500, 100)
    assert got == 0.25, (
        f"only the first of fine / slow first token / stall / failed meets 500/100 ms, got {got}"
    )


# one 187.5 ms gap among three 62.5 ms gaps: the worst gap is 187.5, the TPOT (1.5625 - 1.25) / 3 = 104.17 ms
@task8
def test_distserves_mean_gap_rule_forgives_a_single_stall(impl):
    assert impl.slo_attainment([STALL], 500, 105, gap_rule="mean") == 1.0, "TPOT 104.2 ms <= 105"
    assert impl.slo_attainment([STALL], 500, 104, gap_rule="mean") == 0.0, "TPOT 104.2 ms > 104"
    assert impl.slo_attainment([STALL], 500, 105) == 0.0, "the default judges the 187.5 ms gap"
    assert impl.slo_attainment([FINE, SLOW_FIRST, STALL, FAILED], 500, 105, gap_rule="mean") == 0.5


@task8
def test_tpot_is_measured_after_the_first_token(impl):
    late_first = rec(0.0, [0.25, 0.3125, 0.375])  # TTFT 250 ms; gaps 62.5 ms; (last - sent) / 3 would be 125
    assert impl.slo_attainment([late_first], 500, 62.5, gap_rule="mean") == 1.0
    assert impl.slo_attainment([rec(0.0, [0.25])], 500, 1, gap_rule="mean") == 1.0, "one token: no gap"


@task8
def test_only_status_200_with_no_error_succeeds(impl):
    odd = [rec(0.0, [0.25, 0.3125], status=s) for s in (201, 204, 206, 299)]
    assert impl.slo_attainment([FINE, *odd], 1000, 1000) == 0.2, (
        "another 2xx is not the 200 the docstring asks for"
    )
    empty_error = rec(0.0, [0.25, 0.3125], error="")
    assert impl.slo_attainment([FINE, empty_error], 1000, 1000) == 0.5, (
        "an empty error string is still an error"
    )


@task8
def test_attainment_takes_any_iterable_and_leaves_it_alone(impl):
    records = [FAILED, STALL, FINE]
    before = list(records)
    assert impl.slo_attainment(records, 500, 200) == pytest.approx(2 / 3)
    assert records == before, "the caller's list was changed"
    assert impl.slo_attainment((r for r in records), 500, 200) == pytest.approx(2 / 3), "a generator"


@task8
def test_attainment_edges_are_inclusive(impl):
    assert impl.slo_attainment([FINE], 250, 62.5) == 1.0, "TTFT = SLO and gap = SLO both meet it"
    assert impl.slo_attainment([FINE], 249.9, 62.5) == 0.0, "a TTFT over the SLO is a miss"
    assert impl.slo_attainment([FINE], 250, 62.4) == 0.0, "a gap over the SLO is a miss"


@task8
def test_attainment_judges_the_worst_gap_not_a_typical_one(impl):
    # 187.5 ms once among 62.5 ms gaps: mean 104 ms, median 62.5 ms - a per-request ITL SLO sees the stall
    assert impl.slo_attainment([STALL], 500, 150) == 0.0
    assert impl.slo_attainment([STALL], 500, 187.5) == 1.0


@task8
@pytest.mark.parametrize("where", [0, 1, 2])
def test_a_stall_counts_wherever_it_falls(impl, where):
    # 62.5 ms gaps and one 187.5 ms stall as the first, a middle or the last gap: the worst gap is 187.5 ms
    gaps = [0.0625, 0.0625, 0.0625]
    gaps[where] = 0.1875
    t = [0.25]
    for g in gaps:
        t.append(t[-1] + g)
    stalled = rec(0.0, t)
    assert impl.slo_attainment([stalled], 500, 150) == 0.0, f"the 187.5 ms gap is gap {where + 1} of 3"
    assert impl.slo_attainment([stalled], 500, 187.5) == 1.0
    first_only = rec(0.0, [0.25, 0.4375])  # two tokens: the only gap is the first one, 187.5 ms
    assert impl.slo_attainment([first_only], 500, 150) == 0.0, "a two-token answer has one gap to judge"


@task8
def test_attainment_measures_ttft_from_the_send_time(impl):
    late = rec(10.0, [10.25, 10.3125])
    assert impl.slo_attainment([late], 300, 100) == 1.0, (
        "TTFT is first arrival - sent_s (250 ms), not first arrival"
    )


@task8
def test_failed_requests_count_as_misses(impl):
    bad = [FAILED, rec(0.0, [0.25], status=500), rec(0.0, [0.25], error="reset mid-stream")]
    assert impl.slo_attainment([FINE, *bad], 1000, 1000) == 0.25
    assert impl.slo_attainment(bad, 1000, 1000) == 0.0


@task8
def test_a_one_token_answer_has_no_gap_to_miss(impl):
    assert impl.slo_attainment([rec(0.0, [0.25])], 500, 1) == 1.0


@task8
def test_attainment_on_the_real_capture_shows_what_pd_buys(impl):
    """Every recorded run of lab-02's capture, judged at TTFT <= 500 ms and no gap over 100 ms: the default
    budget stalls streams behind every long prefill, P/D conditional does not. Each run's attainment must
    equal the rule recomputed from its records, and on run 1 ``pd-conditional``'s must be above both
    ``colocated``'s and ``pd-all``'s (every prompt through prefill: its short requests miss on TTFT)."""
    _, runs = load_capture()
    shorts = {k: [r for r in v if r.kind == "short"] for k, v in runs.items()}
    got = {k: impl.slo_attainment(v, 500, 100) for k, v in shorts.items()}
    for key, recs in shorts.items():
        want = sum(
            r.ok and (r.arrivals_s[0] - r.sent_s) * 1e3 <= 500
            and max((b - a for a, b in zip(r.arrivals_s, r.arrivals_s[1:], strict=False)), default=0) * 1e3 <= 100
            for r in recs
        ) / len(recs)  # fmt: skip
        assert got[key] == pytest.approx(want), f"{key}: want {want:.3f}, got {got[key]:.3f}"
    assert (
        got[("pd-conditional", 1)] > got[("colocated", 1)] and got[("pd-conditional", 1)] > got[("pd-all", 1)]
    )


@task8
@pytest.mark.parametrize("bad, exc, name", [
    (dict(records=[]), ValueError, "records"),
    (dict(ttft_slo_ms=0), ValueError, "ttft_slo_ms"),
    (dict(itl_slo_ms=-1), ValueError, "itl_slo_ms"),
    (dict(ttft_slo_ms=float("nan")), ValueError, "ttft_slo_ms"),
    (dict(itl_slo_ms=True), TypeError, "itl_slo_ms"),
    (dict(ttft_slo_ms=INF), ValueError, "ttft_slo_ms"),
    (dict(itl_slo_ms="100"), TypeError, "itl_slo_ms"),
    (dict(gap_rule="median"), ValueError, "gap_rule"),
    (dict(gap_rule="WORST"), ValueError, "gap_rule"),
])  # fmt: skip
def test_attainment_rejects_bad_input(impl, bad, exc, name):
    args = dict(records=[FINE], ttft_slo_ms=500, itl_slo_ms=100) | bad
    with raises(exc, name):
        impl.slo_attainment(**args)


# ---------------------------------------------------------------- task 11: goodput
@task9
def test_goodput_docstring_example_interpolates_the_crossing(impl):
    got = impl.goodput([1, 2, 3, 4], [1.0, 0.95, 0.85, 0.5], 0.9)
    assert got == pytest.approx(2.5), f"the line from (2, 0.95) to (3, 0.85) crosses 0.9 at 2.5, got {got}"


@task9
def test_goodput_uses_the_target(impl):
    assert impl.goodput([1, 2, 3, 4], [1.0, 0.95, 0.85, 0.5], 0.8) == pytest.approx(3 + 0.05 / 0.35)
    assert impl.goodput([1, 2, 3, 4], [1.0, 0.95, 0.85, 0.5]) == pytest.approx(2.5), "default target 0.9"


@task9
def test_goodput_edges(impl):
    assert impl.goodput([1, 2, 4], [0.8, 0.5, 0.1], 0.9) == 0.0, "lowest rate already misses -> 0"
    assert impl.goodput([1, 2, 4], [1.0, 0.99, 0.95], 0.9) == 4.0, "nothing misses -> highest rate swept"
    assert impl.goodput([3], [0.9], 0.9) == 3.0, "exactly at target is good"
    assert impl.goodput([1, 2, 3], [0.9, 0.9, 0.5], 0.9) == pytest.approx(2.0), "0.9 meets 0.9"


@task9
def test_goodput_stops_at_the_first_miss(impl):
    # a recovery after the first miss is noise: the good region ended at the first miss
    got = impl.goodput([1, 2, 3, 4], [1.0, 0.8, 0.95, 0.95], 0.9)
    assert got == pytest.approx(1.5), f"first miss at 2 -> crossing between 1 and 2 = 1.5, got {got}"
    again = impl.goodput([1, 2, 3, 4], [1.0, 0.8, 0.95, 0.5], 0.9)
    assert again == pytest.approx(1.5), f"a second crossing after a recovery is noise too, got {again}"


@task9
def test_a_target_of_one_is_valid(impl):
    assert impl.goodput([1, 2, 3], [1.0, 1.0, 0.5], 1.0) == pytest.approx(2.0)


@task9
def test_goodput_leaves_the_callers_lists_alone(impl):
    rates, att = [1, 2, 3, 4], [1.0, 0.95, 0.85, 0.5]
    impl.goodput(rates, att, 0.9)
    assert (rates, att) == ([1, 2, 3, 4], [1.0, 0.95, 0.85, 0.5])
    bad = [3, 1, 2]
    with raises(ValueError, "rates"):
        impl.goodput(bad, [1.0, 1.0, 1.0], 0.9)
    assert bad == [3, 1, 2], "an unsorted sweep is refused, not sorted in place"


@task9
@pytest.mark.parametrize("rates, att, exc, name", [
    ([1, 2, 1.5], [1.0, 0.5, 1.0], ValueError, "rates"),
    ([1, 2, 3], [1.0, 0.5, 1.5], ValueError, "attainments"),
    ([1, 2, NAN], [1.0, 0.5, 1.0], ValueError, "rates"),
    ([1, 2, 3], [0.5, 1.0, -0.5], ValueError, "attainments"),
    ([1, 2, 3], [0.5, 1.0, "1"], TypeError, "attainments"),
])  # fmt: skip
def test_goodput_checks_the_points_after_the_first_miss_too(impl, rates, att, exc, name):
    # the answer ignores what follows the first miss, but a sweep with a bad point is refused whole
    with raises(exc, name):
        impl.goodput(rates, att, 0.9)


@task9
def test_goodput_on_uneven_rates(impl):
    got = impl.goodput([0.5, 1.0, 4.0], [1.0, 1.0, 0.0], 0.75)
    assert got == pytest.approx(1.75), f"crossing 0.75 between (1, 1.0) and (4, 0.0) is 1.75, got {got}"


@task9
@pytest.mark.parametrize("rates, att, target, exc, name", [
    ([], [], 0.9, ValueError, "attainments"),
    ([1, 2], [1.0], 0.9, ValueError, "attainments"),
    ([2, 1], [1.0, 1.0], 0.9, ValueError, "rates"),
    ([1, 1], [1.0, 1.0], 0.9, ValueError, "rates"),
    ([0, 1], [1.0, 1.0], 0.9, ValueError, "rates"),
    ([1, 2], [1.0, 1.5], 0.9, ValueError, "attainments"),
    ([1, 2], [1.0, -0.1], 0.9, ValueError, "attainments"),
    ([1, 2], [1.0, 1.0], 0.0, ValueError, "target"),
    ([1, 2], [1.0, 1.0], 1.5, ValueError, "target"),
    ([1, 2], [1.0, 1.0], NAN, ValueError, "target"),
    ([1, NAN], [1.0, 1.0], 0.9, ValueError, "rates"),
    ([1, INF], [1.0, 1.0], 0.9, ValueError, "rates"),
    ([True, 2], [1.0, 1.0], 0.9, TypeError, "rates"),
    ([1, 2], [1.0, NAN], 0.9, ValueError, "attainments"),
    ([1, 2], [1.0, "1"], 0.9, TypeError, "attainments"),
    ([1, 2, 3], [1.0, 0.5, 0.9], 1.0000001, ValueError, "target"),
])  # fmt: skip
def test_goodput_rejects_bad_input(impl, rates, att, target, exc, name):
    with raises(exc, name):
        impl.goodput(rates, att, target)


# ---------------------------------------------------------------- task 12: choose_config
@task10
def test_choice_docstring_example(impl):
    g = {"colocated x4": 10.0, "P/D 1:3": 10.4, "P/D 2:2": 12.0}
    assert impl.choose_config(g, "colocated x4") == "P/D 2:2"
    assert impl.choose_config({"colocated x4": 10.0, "P/D 1:3": 10.4}, "colocated x4") == "colocated x4"


@task10
def test_choice_needs_more_than_the_margin(impl):
    g = {"colo": 8.0, "pd": 10.0}  # exactly +25%
    assert impl.choose_config(g, "colo", min_gain=0.25) == "colo", (
        "a gain EQUAL to min_gain does not move you"
    )
    assert impl.choose_config(g, "colo", min_gain=0.125) == "pd"
    assert impl.choose_config(g, "colo", min_gain=0.0) == "pd"
    assert impl.choose_config({"colo": 10.0, "pd": 10.25}, "colo") == "colo", "default margin is 5%"
    assert impl.choose_config({"colo": 10.0, "pd": 10.75}, "colo") == "pd", "default margin is 5%"


@task10
def test_choice_takes_the_best_not_the_first_that_beats_the_baseline(impl):
    g = {"pd 1:3": 12.0, "colo": 10.0, "pd 2:2": 15.0, "pd 3:1": 11.0}
    assert impl.choose_config(g, "colo") == "pd 2:2"


@task10
def test_choice_ties_go_to_the_first_listed(impl):
    assert impl.choose_config({"colo": 1.0, "b": 2.0, "a": 2.0}, "colo") == "b"
    assert impl.choose_config({"colo": 1.0, "a": 2.0, "b": 2.0}, "colo") == "a"


@task10
def test_choice_keeps_a_baseline_that_is_best(impl):
    assert impl.choose_config({"colo": 10.0, "pd": 4.0}, "colo") == "colo"
    assert impl.choose_config({"pd": 4.0, "colo": 10.0}, "colo") == "colo"


@task10
def test_distserves_figure_1_per_gpu(impl):
    """DistServe Fig. 1: one A100 colocated serves 1.6 req/s; 2 prefill + 1 decode A100s serve 10 req/s,
    3.3 per GPU: 2.1x per GPU (6.25x as a fleet, which is not the comparison)."""
    g, n = {"colocated x1": 1.6, "P/D 2:1": 10.0}, {"colocated x1": 1, "P/D 2:1": 3}
    assert impl.choose_config(g, "colocated x1", gpus=n) == "P/D 2:1"
    assert impl.choose_config(g, "colocated x1", 1.1, gpus=n) == "colocated x1", (
        "2.08x is not more than +110%"
    )
    assert impl.choose_config(g, "colocated x1", 1.0, gpus=n) == "P/D 2:1", "2.08x is more than +100%"


@task10
def test_per_gpu_changes_the_winner_when_sizes_differ(impl):
    g = {"colocated x4": 10.0, "P/D 3:2": 12.0}
    assert impl.choose_config(g, "colocated x4") == "P/D 3:2", "by the fleet: 12 > 10.5"
    assert impl.choose_config(g, "colocated x4", gpus={"colocated x4": 4, "P/D 3:2": 5}) == "colocated x4", (
        "per GPU: 2.4 < 2.5"
    )


@task10
@pytest.mark.parametrize("gpus, exc", [
    ({"colo": 4}, ValueError), ({"colo": 4, "pd": 0}, ValueError), ({"colo": 4, "pd": 2.0}, TypeError),
    ({"colo": 4, "pd": True}, TypeError), ({"pd": 4}, ValueError), ({"pd": 1}, ValueError),
])  # fmt: skip
def test_choice_gpus_are_checked(impl, gpus, exc):
    with raises(exc, "gpus"):
        impl.choose_config({"colo": 10.0, "pd": 12.0}, "colo", gpus=gpus)


@task10
def test_choice_leaves_the_callers_dict_alone(impl):
    g, n = {"pd": 12.0, "colo": 10.0}, {"pd": 4, "colo": 4}
    assert impl.choose_config(g, "colo", 0.0, gpus=n) == "pd" and list(g.items()) == [
        ("pd", 12.0),
        ("colo", 10.0),
    ]
    assert n == {"pd": 4, "colo": 4}


@task10
def test_a_zero_baseline_is_beaten_by_anything_that_serves(impl):
    assert impl.choose_config({"colo": 0.0, "pd": 0.01}, "colo") == "pd"
    assert impl.choose_config({"colo": 0.0, "pd": 0.0}, "colo") == "colo"


@task10
@pytest.mark.parametrize("goodputs, baseline, gain, exc, name", [
    ({"a": 1.0}, "b", 0.05, ValueError, "baseline"),
    ({"a": 1.0, "b": -1.0}, "a", 0.05, ValueError, "goodputs"),
    ({"a": 1.0}, "a", -0.1, ValueError, "min_gain"),
    ({"a": 1.0, "b": float("nan")}, "a", 0.05, ValueError, "goodputs"),
    ({"a": 1.0, "b": INF}, "a", 0.05, ValueError, "goodputs"),
    ({"a": INF, "b": 1.0}, "a", 0.05, ValueError, "goodputs"),
    ({"a": 1.0, "b": True}, "a", 0.05, TypeError, "goodputs"),
    ({"a": 1.0, "b": 2.0}, "a", NAN, ValueError, "min_gain"),
    ({"a": 1.0, "b": 2.0}, "a", INF, ValueError, "min_gain"),
])  # fmt: skip
def test_choice_rejects_bad_input(impl, goodputs, baseline, gain, exc, name):
    with raises(exc, name):
        impl.choose_config(goodputs, baseline, gain)


@task10
def test_the_whole_chain_on_the_twin_picks_pd_when_prefills_would_stall_decode(impl):
    """Tasks 8-10 over a small twin sweep: long prompts on a toy 2-instance fleet with an ITL SLO a
    whole-prompt step breaks. Colocated misses the SLO at every rate; P/D 1:1 serves some."""
    toy = LinearProfile("toy", 10.0, per_prefill_token_ms=0.05, kv_bytes_per_token=1000, block_size=16)
    work = [a for a in poisson(1.0, 150, "rag", seed=1)]
    rates = [0.5, 1.0, 2.0, 4.0]
    fleets = {"colocated x2": Fleet(colocated=2), "P/D 1:1": Fleet(prefill=1, decode=1)}
    goodputs = {}
    for name, fleet in fleets.items():
        att = []
        for rate in rates:
            scaled = [type(a)(a.arrival_s / rate, a.prompt_tokens, a.output_tokens, a.kind) for a in work]
            att.append(impl.slo_attainment(simulate(fleet, toy, scaled).records(), 2000, 100))
        goodputs[name] = impl.goodput(rates, att, 0.9)
    assert goodputs["colocated x2"] == 0.0, f"a ~150 ms whole-prompt step breaks a 100 ms ITL SLO: {goodputs}"
    assert goodputs["P/D 1:1"] > 0.0, goodputs
    assert impl.choose_config(goodputs, "colocated x2") == "P/D 1:1"

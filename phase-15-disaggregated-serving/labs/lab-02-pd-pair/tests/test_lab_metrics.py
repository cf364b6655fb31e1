"""lab-02 task 5, the edges: exact ranks, the caller's data, and which zeros are valid.

test_lab.py holds the known answers and the real capture; these tests aim at the mistakes that pass them.
"""

from __future__ import annotations

import math

import pytest

THOUSAND = [float(v) for v in range(1, 1001)]


def _runs(impl, gap_lists, ttfts):
    return [impl.RequestTiming(ttft_s=t, itl_s=list(g)) for g, t in zip(gap_lists, ttfts, strict=True)]


@pytest.mark.lab02_task5
@pytest.mark.parametrize(
    ("p", "want", "float_rank"),
    [(99.9, 999.0, "99.9 / 100 * 1000 = 999.0000000000001"), (16.1, 161.0, "16.1 * 1000 / 100 = 161.00000000000003"),
     (57, 57.0, None), (14, 14.0, None)],
)  # fmt: skip
def test_percentile_rank_is_exact_not_float(impl, p, want, float_rank):
    values = THOUSAND if p in (99.9, 16.1) else [float(v) for v in range(1, 101)]
    got = impl.percentile(values, p)
    hint = f"rank computed in floats: {float_rank}, and ceil() of it is one too many" if float_rank else (
        f"rank computed in floats: {p} / 100 * {len(values)} = {p / 100 * len(values)!r}")  # fmt: skip
    assert got == want, (
        f"p{p} of 1..{len(values)}: nearest rank ceil(p/100*n) is exactly {int(want)}, got {got}. "
        f"Likely cause: {hint}; compute it exactly, e.g. with fractions.Fraction(str(p))")  # fmt: skip


@pytest.mark.lab02_task5
def test_percentile_leaves_the_callers_values_alone(impl):
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert impl.percentile(values, 50) == 3.0
    assert values == [5.0, 1.0, 4.0, 2.0, 3.0], (
        f"percentile must not sort the caller's list in place: {values}"
    )
    assert impl.percentile((3.0, 1.0, 2.0), 100) == 3.0, "any sequence works, a tuple too"


@pytest.mark.lab02_task5
@pytest.mark.parametrize("p", [-0.1, -50, 100.5, float("nan")])
def test_percentile_rejects_p_outside_0_100(impl, p):
    with pytest.raises(ValueError):
        impl.percentile([1.0, 2.0], p)


@pytest.mark.lab02_task5
def test_request_timing_errors_need_no_particular_wording(impl):
    for sent_at, arrivals in ((0.0, []), (0.0, ()), (2.0, [1.0, 3.0]), (0.0, [1.0, 2.0, 1.5])):
        with pytest.raises(ValueError):
            impl.request_timing(sent_at, arrivals)
    arrivals = (1.0, 1.5, 1.5)
    t = impl.request_timing(1.0, arrivals)
    assert t.ttft_s == 0.0 and list(t.itl_s) == [0.5, 0.0], (
        f"a TTFT of 0 (first token at the send time) and a 0 gap are valid, got {t}")  # fmt: skip


@pytest.mark.lab02_task5
def test_signature_pools_the_mean_too(impl):
    before = _runs(impl, [[0.01], [0.01] * 5, [0.5]], [0.2, 0.1, 0.3])
    after = _runs(impl, [[0.02, 0.02], [0.02]], [0.05, 0.15])
    sig = impl.signature(before, after)
    assert sig.itl_mean_before_s == pytest.approx((0.06 + 0.5) / 7), (
        f"the ITL mean pools every gap (0.56 s / 7 gaps = 0.08 s), not per-request means (0.173 s); got "
        f"{sig.itl_mean_before_s}")  # fmt: skip


@pytest.mark.lab02_task5
def test_signature_zeros_that_are_valid(impl):
    # more than half of the gaps are 0 (tokens that arrived in one chunk): ITL p50 is 0
    chunky = _runs(impl, [[0.0, 0.0, 0.0, 0.03]], [0.1])
    steady = _runs(impl, [[0.02, 0.02, 0.02, 0.02]], [0.0])
    sig = impl.signature(chunky, steady)
    assert sig.itl_p50_before_s == 0.0 and sig.itl_p50_ratio == math.inf, (
        f"ITL p50 0 before and 0.02 after: the ratio is math.inf, got {sig.itl_p50_ratio}")  # fmt: skip
    assert sig.ttft_change_pct == pytest.approx(-100.0), (
        f"TTFT p50 0.1 -> 0 is -100 % (a zero after is valid), got {sig.ttft_change_pct}")  # fmt: skip
    both = impl.signature(chunky, _runs(impl, [[0.0, 0.0, 0.0, 0.01]], [0.1]))
    assert both.itl_p50_ratio == 1.0 and both.itl_p99_ratio == pytest.approx(0.01 / 0.03), (
        f"ITL p50 0 on both sides: the ratio is 1.0, got {both.itl_p50_ratio}")  # fmt: skip


@pytest.mark.lab02_task5
def test_signature_rejects_a_zero_colocated_ttft_p50(impl):
    zero_before = _runs(impl, [[0.02], [0.02], [0.02]], [0.0, 0.0, 0.3])
    with pytest.raises(ValueError):  # a change in percent of 0 is undefined, whatever the wording
        impl.signature(zero_before, _runs(impl, [[0.02]], [0.1]))
    before = _runs(impl, [[0.02, 0.03]], [0.1])
    kept = [list(r.itl_s) for r in before]
    impl.signature(before, _runs(impl, [[0.02]], [0.1]))
    assert [list(r.itl_s) for r in before] == kept, "signature must not modify the timings it is given"


@pytest.mark.lab02_task5
def test_signature_p50_is_a_nearest_rank_value_not_a_median(impl):
    # 4 pooled gaps 10, 20, 30, 40 ms: nearest-rank p50 is rank 2 = 20 ms; a median would say 25 ms
    before = _runs(impl, [[0.04, 0.01], [0.03, 0.02]], [0.1, 0.3])
    after = _runs(impl, [[0.01, 0.01]], [0.2])
    sig = impl.signature(before, after)
    assert sig.itl_p50_before_s == pytest.approx(0.02) and sig.ttft_p50_before_s == pytest.approx(0.1), (
        f"p50 by nearest rank over an even count is one of the values (20 ms gap, 0.1 s TTFT), not the average "
        f"of the two middle ones; got ITL p50 {sig.itl_p50_before_s}, TTFT p50 {sig.ttft_p50_before_s}")  # fmt: skip


@pytest.mark.lab02_task5
def test_signature_leaves_every_callers_list_alone(impl):
    before = _runs(impl, [[0.02, 0.03], [0.05], [0.04, 0.01]], [0.1, 0.2, 0.3])
    after = _runs(impl, [[0.01], [0.02, 0.02]], [0.1, 0.1])
    kept = [[list(r.itl_s) for r in side] for side in (before, after)]
    impl.signature(before, after)
    impl.signature(before, after)
    assert [[list(r.itl_s) for r in side] for side in (before, after)] == kept, (
        "signature must not modify (or extend) any request's gap list: pool into a new list")  # fmt: skip


@pytest.mark.lab02_task5
def test_signature_accepts_single_token_requests_beside_others(impl):
    # a request that produced one token has no gap: its TTFT still counts (p50 of 0.1, 0.2, 0.5 is 0.2;
    # the one request with gaps alone would say 0.5), on either side
    before = _runs(impl, [[], [0.03, 0.03], []], [0.1, 0.5, 0.2])
    after = _runs(impl, [[0.02], [], []], [0.3, 0.1, 0.15])
    sig = impl.signature(before, after)
    assert (sig.ttft_p50_before_s, sig.ttft_p50_after_s) == (pytest.approx(0.2), pytest.approx(0.15)), (
        f"TTFT p50 over every request, single-token ones included: want 0.2 and 0.15, got "
        f"{sig.ttft_p50_before_s} and {sig.ttft_p50_after_s}")  # fmt: skip
    assert sig.itl_p99_before_s == pytest.approx(0.03), sig


@pytest.mark.lab02_task5
def test_signature_p99_is_the_nearest_rank_of_distinct_gaps(impl):
    # 1..100 ms spread over 4 requests, 250 ms of TTFT each side: nearest rank 99 of 100 is 99 ms (not the
    # max, not the mean of the top 1%, not an index past it); after, every gap is 10 ms
    gaps = [v / 1000 for v in range(100, 0, -1)]
    before = _runs(impl, [gaps[i::4] for i in range(4)], [0.25] * 4)
    after = _runs(impl, [[0.01] * 25 for _ in range(4)], [0.25] * 4)
    sig = impl.signature(before, after)
    assert (sig.itl_p99_before_s, sig.itl_p50_before_s) == (0.099, 0.05), (
        f"pooled gaps 1..100 ms: p99 is the 99th smallest (99 ms), p50 the 50th (50 ms); got "
        f"{sig.itl_p99_before_s}, {sig.itl_p50_before_s}")  # fmt: skip
    assert sig.itl_p99_ratio == pytest.approx(0.01 / 0.099), sig

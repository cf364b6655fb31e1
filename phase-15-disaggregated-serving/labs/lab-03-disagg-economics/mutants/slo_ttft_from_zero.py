"""TTFT taken as the first arrival time itself, forgetting to subtract when the request was sent."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def slo_attainment(records, ttft_slo_ms, itl_slo_ms):
    _correct_attainment(records, ttft_slo_ms, itl_slo_ms)
    records = list(records)
    met = 0
    for r in records:
        if r.status != 200 or not r.arrivals_s or r.error is not None:
            continue
        gaps = [b - a for a, b in zip(r.arrivals_s, r.arrivals_s[1:], strict=False)]
        ttft_ms = r.arrivals_s[0] * 1e3  # BUG: should be arrivals_s[0] - sent_s
        met += ttft_ms <= ttft_slo_ms and max(gaps, default=0.0) * 1e3 <= itl_slo_ms
    return met / len(records)

"""The wait for the first token is counted as an inter-token gap, so a slow TTFT also fails the ITL SLO."""

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
        times = [r.sent_s, *r.arrivals_s]  # BUG: sent -> first token is TTFT, not a gap
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        met += (r.arrivals_s[0] - r.sent_s) * 1e3 <= ttft_slo_ms and max(gaps) * 1e3 <= itl_slo_ms
    return met / len(records)

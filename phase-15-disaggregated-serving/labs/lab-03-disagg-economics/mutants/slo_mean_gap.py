"""Judges a request by its mean inter-token gap: one long stall among fast tokens passes the ITL SLO."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def slo_attainment(records, ttft_slo_ms, itl_slo_ms):
    _correct_attainment(records, ttft_slo_ms, itl_slo_ms)  # the argument checks
    records = list(records)
    met = 0
    for r in records:
        if r.status != 200 or not r.arrivals_s or r.error is not None:
            continue
        gaps = [b - a for a, b in zip(r.arrivals_s, r.arrivals_s[1:], strict=False)]
        mean_gap_ms = (
            sum(gaps) / len(gaps) if gaps else 0.0
        ) * 1e3  # BUG: the worst gap is what the SLO bounds
        met += (r.arrivals_s[0] - r.sent_s) * 1e3 <= ttft_slo_ms and mean_gap_ms <= itl_slo_ms
    return met / len(records)

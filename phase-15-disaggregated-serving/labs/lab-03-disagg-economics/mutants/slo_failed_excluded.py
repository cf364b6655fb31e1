"""Failed requests are dropped from the denominator: a fleet that errors out looks perfect."""

from labkit.mutants import inherit_solution

inherit_solution(globals())
_correct_attainment = slo_attainment
_correct_goodput = goodput
_correct_choice = choose_config


def slo_attainment(records, ttft_slo_ms, itl_slo_ms):
    _correct_attainment(records, ttft_slo_ms, itl_slo_ms)
    ok = [r for r in records if r.status == 200 and r.arrivals_s and r.error is None]  # BUG: misses vanish
    return _correct_attainment(ok, ttft_slo_ms, itl_slo_ms) if ok else 0.0

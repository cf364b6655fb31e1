"""The first gap (first to second token) is never looked at: the gaps start at the second one."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def slo_attainment(records, ttft_slo_ms: float, itl_slo_ms: float, *, gap_rule: str = "worst") -> float:
    if number("ttft_slo_ms", ttft_slo_ms) <= 0:
        raise ValueError(f"ttft_slo_ms: must be > 0, got {ttft_slo_ms!r}")
    if number("itl_slo_ms", itl_slo_ms) <= 0:
        raise ValueError(f"itl_slo_ms: must be > 0, got {itl_slo_ms!r}")
    if gap_rule not in GAP_RULES:
        raise ValueError(f"gap_rule: must be one of {GAP_RULES}, got {gap_rule!r}")
    records = list(records)
    if not records:
        raise ValueError("records: need at least one request to measure attainment")
    met = 0
    for r in records:
        if r.status != 200 or not r.arrivals_s or r.error is not None:
            continue
        ttft_ms = (r.arrivals_s[0] - r.sent_s) * 1e3
        t = r.arrivals_s
        if len(t) < 2:
            gap_ms = 0.0
        elif gap_rule == "worst":
            gap_ms = max((t[i] - t[i - 1] for i in range(2, len(t))), default=0.0) * 1e3
        else:
            gap_ms = (t[-1] - t[0]) / (len(t) - 1) * 1e3
        met += ttft_ms <= ttft_slo_ms and gap_ms <= itl_slo_ms
    return met / len(records)

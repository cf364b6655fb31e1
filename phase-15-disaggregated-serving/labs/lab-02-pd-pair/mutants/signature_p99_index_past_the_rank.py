"""signature's own p99: sorted(gaps)[int(0.99 * n)], one past the nearest rank whenever 0.99 n is whole (100 gaps: the max)."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def signature(colocated: Sequence[RequestTiming], disaggregated: Sequence[RequestTiming]) -> Signature:

    def pooled(runs: Sequence[RequestTiming], label: str) -> tuple[list[float], list[float]]:
        if not runs:
            raise ValueError(f"{label}: no requests")
        gaps = [g for r in runs for g in r.itl_s]
        if not gaps:
            raise ValueError(f"{label}: no inter-token gaps (every request produced a single token)")
        return [r.ttft_s for r in runs], gaps

    def ratio(after: float, before: float) -> float:
        if before == 0:
            return 1.0 if after == 0 else math.inf
        return after / before

    tb, gb = pooled(colocated, "colocated")
    ta, ga = pooled(disaggregated, "disaggregated")
    t50b, t50a = percentile(tb, 50), percentile(ta, 50)
    if t50b == 0:
        raise ValueError("colocated TTFT p50 is 0: a TTFT change in percent of 0 is undefined")
    change = (t50a - t50b) / t50b * 100
    i50b, i50a, i99b, i99a = (
        percentile(gb, 50),
        percentile(ga, 50),
        sorted(gb)[min(int(0.99 * len(gb)), len(gb) - 1)],
        sorted(ga)[min(int(0.99 * len(ga)), len(ga) - 1)],
    )
    return Signature(
        ttft_p50_before_s=t50b, ttft_p50_after_s=t50a, ttft_change_pct=change,
        itl_mean_before_s=sum(gb) / len(gb), itl_mean_after_s=sum(ga) / len(ga),
        itl_p50_before_s=i50b, itl_p50_after_s=i50a, itl_p50_ratio=ratio(i50a, i50b),
        itl_p99_before_s=i99b, itl_p99_after_s=i99a, itl_p99_ratio=ratio(i99a, i99b),
    )  # fmt: skip

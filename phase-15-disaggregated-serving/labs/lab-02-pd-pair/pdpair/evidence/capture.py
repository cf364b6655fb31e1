"""lab-02's reading of its signature capture (the format itself: ``labkit.capture``, shared with lab-03's twin).

``timings`` applies the student's task-5 ``request_timing`` to recorded requests; ``attribute_spikes`` finds
every decode stall and the long prompts whose prefill overlapped it; ``toll_parts`` splits a handed-off
request's TTFT into the prefill hop and the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.capture import (  # noqa: F401  (re-exported: lab-02's tools and tests read captures through here)
    MANIFEST,
    SIGNATURE_CAPTURE,
    SPIKE_S,
    RequestRecord,
    capture_file,
    load_capture,
    percentile,
    read_manifest,
    read_records,
    summarize,
    write_records,
)
from pdpair import LAB_DIR

CAPTURE_DIR = SIGNATURE_CAPTURE


def timings(impl, records: Sequence[RequestRecord], kind: str = "short") -> list:
    """The student's ``request_timing`` of every successful request of one kind."""
    return [impl.request_timing(r.sent_s, r.arrivals_s) for r in records if r.ok and r.kind == kind]


@dataclass
class Spike:
    """One decode gap over the threshold, and the long prompts whose prefill window overlapped it."""

    instance: str
    start_s: float
    gap_ms: float
    streams: int  # how many short streams stalled over the same window
    culprits: list[float]  # sent_s of long prompts on the same instance whose prefill overlapped the gap


def attribute_spikes(records: Sequence[RequestRecord], threshold_s: float = SPIKE_S) -> list[Spike]:
    """Every stall (gaps over ``threshold_s`` merged per instance when they overlap), with the long
    prompts whose prefill ran on the same instance during it (sent before the gap ended, first token
    after the gap began). A spike with no culprit is interference from something else (say so)."""
    ok = [r for r in records if r.ok]
    longs = [r for r in ok if r.kind == "long"]
    raw = sorted(
        (r.instance, a, b)
        for r in ok
        if r.kind == "short"
        for a, b in zip(r.arrivals_s, r.arrivals_s[1:], strict=False)
        if b - a > threshold_s
    )
    merged: list[list] = []  # [instance, start, end, streams]
    for inst, a, b in raw:
        if merged and merged[-1][0] == inst and a < merged[-1][2]:
            merged[-1][2] = max(merged[-1][2], b)
            merged[-1][3] += 1
        else:
            merged.append([inst, a, b, 1])
    spikes = []
    for inst, a, b, n in merged:
        culprits = [l.sent_s for l in longs if l.instance == inst and l.sent_s < b and l.arrivals_s[0] > a]  # noqa: E741
        spikes.append(Spike(inst, a, (b - a) * 1e3, n, culprits))
    return spikes


def toll_parts(records: Sequence[RequestRecord], kind: str) -> dict[str, float] | None:
    """Where a handed-off request's TTFT went (medians, ms): the prefill hop as the proxy timed it
    (queue + prefill + the 1-token answer) and the rest (decode's KV pull, its wait for a step, the
    first token's trip back through the proxy). None if no request of this kind was handed off."""
    handed = [r for r in records if r.ok and r.kind == kind and r.prefill_ms is not None]
    if not handed:
        return None
    ttft = [(r.arrivals_s[0] - r.sent_s) * 1e3 for r in handed]
    prefill = [r.prefill_ms for r in handed]
    return {
        "requests": len(handed),
        "ttft_p50_ms": round(percentile(ttft, 50), 1),
        "prefill_hop_p50_ms": round(percentile(prefill, 50), 1),
        "after_prefill_p50_ms": round(percentile([t - p for t, p in zip(ttft, prefill, strict=True)], 50), 1),
    }


CAPTURES_DIR = (
    LAB_DIR / "captures"
)  # graded recordings: tests read them, recorders replace them only on request


def recording_dir(out, replace_captures: bool, parser=None):
    """Where a recorder may write: ``out`` resolved; a folder under ``captures/`` (the graded data the
    tests read) only with ``replace_captures`` (``--replace-captures``), else ``parser.error`` (or
    ValueError without a parser). Recorders default to ``out/``."""
    path = Path(out).resolve()
    if not replace_captures and path.is_relative_to(CAPTURES_DIR.resolve()):
        msg = (f"--out {out} is under captures/ (graded data the tests read): pass --replace-captures to "
               "replace it, or write under out/")  # fmt: skip
        if parser is not None:
            parser.error(msg)
        raise ValueError(msg)
    return path

"""The capture format two labs share: lab-02 records a real pair in it, lab-03's serving twin writes
simulated runs in it, and both read it with the same percentile.

A capture is a folder: ``manifest.json`` (machine, versions, model, workload, setups, the command that
reproduces it, per-run figures) and one ``<setup>.run<N>.jsonl`` per setup and run, one line per request:

    {"kind": "short" | "long", "instance": "decode", "mode": "disaggregated", "status": 200,
     "sent_s": 12.003117, "arrivals_s": [12.131, 12.164, ...], "prefill_ms": 95.1, "error": null}

Times are seconds from the start of the measured load (the client's monotonic clock). ``instance`` is
the vLLM server that streamed the tokens (the proxy's ``X-PD-Decode-Upstream``, named by role);
``prefill_ms`` is the proxy's prefill hop (``Server-Timing``), null when there was none.
Figures here use the exact nearest-rank percentile (``percentile``; lab-02 task 5 asks students for the
same rule, and this copy is independent of student code; numpy's ``inverted_cdf`` is the same rule but
its float rank is off by one at p=99.9 for every n that is a multiple of 1000).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from labkit import LABS_DIR

SIGNATURE_CAPTURE = LABS_DIR / "lab-02-pd-pair" / "captures" / "cpu-2core"  # the included real-pair capture
MANIFEST = "manifest.json"
SPIKE_S = 0.250  # a decode gap longer than this is a stall a reader notices


@dataclass
class RequestRecord:
    kind: str  # "short" (a steady decode stream) | "long" (a long prompt arriving on schedule)
    instance: str  # the server that streamed the answer
    mode: str | None  # the proxy's X-PD-Mode
    status: int
    sent_s: float
    arrivals_s: list[float] = field(default_factory=list)
    prefill_ms: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.arrivals_s) and self.error is None


def capture_file(directory: Path, setup: str, run: int) -> Path:
    return Path(directory) / f"{setup}.run{run}.jsonl"


def write_records(path: Path, records: Iterable[RequestRecord]) -> None:
    """One JSON object per line, times rounded to the microsecond (the clock's useful resolution)."""
    lines = []
    for r in records:
        d = asdict(r)
        d["sent_s"] = round(r.sent_s, 6)
        d["arrivals_s"] = [round(t, 6) for t in r.arrivals_s]
        if r.prefill_ms is not None:
            d["prefill_ms"] = round(r.prefill_ms, 2)
        lines.append(json.dumps(d, separators=(",", ":")))
    Path(path).write_text("\n".join(lines) + "\n")


def read_records(path: Path) -> list[RequestRecord]:
    with open(path) as f:
        return [RequestRecord(**json.loads(line)) for line in f if line.strip()]


def read_manifest(directory: Path = SIGNATURE_CAPTURE) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no capture manifest at {path} (record one with lab-02's tools/record_signature.py)"
        )
    return json.loads(path.read_text())


def load_capture(
    directory: Path = SIGNATURE_CAPTURE,
) -> tuple[dict, dict[tuple[str, int], list[RequestRecord]]]:
    """The manifest and every run's records, keyed (setup, run)."""
    manifest = read_manifest(directory)
    runs = {}
    for setup in manifest["setups"]:
        for run in manifest["runs"]:
            runs[(setup, run)] = read_records(capture_file(directory, setup, run))
    return manifest, runs


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank p-th percentile (p in (0, 100]): the smallest value with at least p% of values at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(Fraction(str(p)) * len(ordered) / 100)) - 1]


def summarize(records: Sequence[RequestRecord], duration_s: float) -> dict[str, float | int | None]:
    """The figures a run is reported with (ms): TTFT of the short streams and of the long prompts, ITL
    pooled over every gap of every short stream (p50, p99, p99.9, max, share over 250 ms)."""
    ok = [r for r in records if r.ok]
    short = [r for r in ok if r.kind == "short"]
    long = [r for r in ok if r.kind == "long"]
    gaps = [b - a for r in short for a, b in zip(r.arrivals_s, r.arrivals_s[1:], strict=False)]
    ttft = [r.arrivals_s[0] - r.sent_s for r in short]
    ms = 1e3
    return {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "short_tokens_per_s": round(sum(len(r.arrivals_s) for r in short) / duration_s, 2),
        "ttft_p50_ms": round(percentile(ttft, 50) * ms, 1),
        "ttft_p99_ms": round(percentile(ttft, 99) * ms, 1),
        "long_ttft_p50_ms": round(percentile([r.arrivals_s[0] - r.sent_s for r in long], 50) * ms, 1) if long else None,
        "itl_p50_ms": round(percentile(gaps, 50) * ms, 1),
        "itl_p99_ms": round(percentile(gaps, 99) * ms, 1),
        "itl_p999_ms": round(percentile(gaps, 99.9) * ms, 1),
        "itl_max_ms": round(max(gaps) * ms, 1),
        "gaps_over_250ms_pct": round(100 * sum(g > SPIKE_S for g in gaps) / len(gaps), 3),
        "gaps": len(gaps),
    }  # fmt: skip

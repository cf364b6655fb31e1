"""What arrives: open-loop Poisson traffic, a trace file, or closed-loop streams like lab-02's recorder.

An arrival is (time in seconds, prompt tokens, output tokens, kind). Built-in mixes:
- ``chat``: short prompts, medium answers (prompt ~ lognormal around 256, answer around 128);
- ``rag``: long prompts, short answers (prompt around 3000, answer around 128);
- ``mix``: 70% chat, 30% rag.
Lengths are drawn from a seeded generator, so a (mix, rate, n, seed) names one workload exactly.
Trace files: CSV with a header or JSONL, fields ``arrival_s``, ``prompt_tokens``, ``output_tokens``
(and optional ``kind``); arrival times must not decrease. Bad rows raise ValueError naming the line.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

MIXES = {
    # name: (prompt median, prompt sigma, output median, output sigma) of lognormal lengths
    "chat": (256, 0.6, 128, 0.5),
    "rag": (3000, 0.4, 128, 0.5),
}


@dataclass(frozen=True)
class Arrival:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    kind: str = "request"


def _lognormal(rng: random.Random, median: float, sigma: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(median * math.exp(rng.gauss(0.0, sigma)))))


def poisson(
    rate_per_s: float, n: int, mix: str = "chat", seed: int = 0, max_len: int = 8192
) -> list[Arrival]:
    """``n`` Poisson arrivals at ``rate_per_s`` with lengths from a built-in mix.
    Example: poisson(2.0, 1000) spans ~500 s of chat-like traffic."""
    if rate_per_s <= 0:
        raise ValueError(f"rate_per_s: must be > 0, got {rate_per_s}")
    if mix not in (*MIXES, "mix"):
        raise ValueError(f"mix: unknown {mix!r}; known: chat, rag, mix")
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        t += rng.expovariate(rate_per_s)
        kind = mix if mix != "mix" else ("rag" if rng.random() < 0.3 else "chat")
        pm, ps, om, osg = MIXES[kind]
        out.append(Arrival(t, _lognormal(rng, pm, ps, 16, max_len), _lognormal(rng, om, osg, 2, 2048), kind))
    return out


def read_trace(path: str | Path) -> list[Arrival]:
    """Arrivals from a CSV (with a header) or JSONL trace; see the module docstring for the fields."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace: no file at {path}")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ValueError(f"trace: {path} must end in .csv or .jsonl")
    out: list[Arrival] = []
    for i, row in enumerate(rows, start=1):
        try:
            a = Arrival(float(row["arrival_s"]), int(row["prompt_tokens"]), int(row["output_tokens"]),
                        str(row.get("kind") or "request"))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"trace: {path} row {i}: {exc!r} (need arrival_s, prompt_tokens, output_tokens)"
            ) from None
        if a.prompt_tokens < 1 or a.output_tokens < 1 or a.arrival_s < 0:
            raise ValueError(f"trace: {path} row {i}: lengths must be >= 1 and arrival_s >= 0, got {a}")
        if out and a.arrival_s < out[-1].arrival_s:
            raise ValueError(
                f"trace: {path} row {i}: arrival_s goes back in time ({a.arrival_s} < {out[-1].arrival_s})"
            )
        out.append(a)
    return out


@dataclass(frozen=True)
class Streams:
    """Closed-loop load, lab-02's signature workload (``pdpair.load.workload.WorkloadConfig``): ``streams``
    clients, client i starting at i x ``stagger_s``, each sending a short prompt and the next one the
    moment the last token arrives; answers are ``output_tokens`` +- ``output_jitter`` (uniform); plus
    one long prompt every ``long_every_s`` from ``long_every_s / 2`` on. Nothing is sent after
    ``duration_s``."""

    streams: int = 6
    short_prompt_tokens: int = 32
    output_tokens: int = 96
    output_jitter: int = 32
    stagger_s: float = 0.3
    long_prompt_tokens: int = 1500
    long_output_tokens: int = 8
    long_every_s: float = 6.0
    duration_s: float = 120.0
    seed: int = 0

    @classmethod
    def from_manifest(cls, workload: dict, seed: int = 0) -> Streams:
        """The workload a lab-02 capture's manifest describes."""
        return cls(workload["streams"], workload["short_prompt_tokens"], workload["output_tokens"],
                   workload["output_jitter"], workload["stream_stagger_s"], workload["long_prompt_tokens"],
                   workload["long_output_tokens"], workload["long_every_s"], workload["duration_s"], seed)  # fmt: skip

    def longs(self) -> list[Arrival]:
        n = math.floor((self.duration_s - self.long_every_s / 2) / self.long_every_s) + 1
        return [Arrival(self.long_every_s / 2 + i * self.long_every_s, self.long_prompt_tokens,
                        self.long_output_tokens, "long") for i in range(max(n, 0))]  # fmt: skip

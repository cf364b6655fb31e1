"""The engine steps of lab-02's signature capture, as (what the step carried, how long it took).

Given code for task 4 (fit a step-time model) and task 5 (the stall a prefill imposes). The capture
(``lab-02-pd-pair/captures/cpu-2core``: llama-200m on vLLM 0.32.0's CPU backend, one pinned core per
instance) records token arrival times, not steps; a step is read off them the way lab-02's
``tools/calibrate_profile.py`` reads it: token arrivals on one instance closer than 5 ms came out of
the same step, so each step ends at a cluster and starts at the previous one. What the step carried:
- every token in the cluster that is not a request's first token is one decoding sequence;
- ``colocated`` (default budget 2048): a long prompt's first token marks the step that prefilled the
  whole prompt (the other tokens in it are the decodes that rode along);
- ``colocated-chunk64`` (budget 64): a long prompt is cut into chunks of (64 - decodes) tokens over
  consecutive steps; walking back from the step that streamed its first token gives each chunk's
  size and start (a step that also prefilled a short prompt is left out, as is a walk that does not
  add up to the prompt);
- ``pd-all``'s decode instance never prefills a prompt: its steps without a first token are plain
  decode steps.
Example: ``capture_steps(run=1)`` -> ~6,100 decode steps, ~490 chunk steps and 20 whole-prompt steps
of run 1; ``run=2`` is the held-out recording of the same setups.
"""

from __future__ import annotations

import functools
from pathlib import Path

from disagg.tables import StepSample
from labkit.capture import SIGNATURE_CAPTURE, load_capture

CLUSTER_S = 0.005  # token arrivals closer than this on one instance came from the same step


def pairs(start: int, tokens: int) -> int:
    """Causal (query, key) pairs of ``tokens`` prompt tokens at positions start .. start+tokens-1, each
    scoring itself and every earlier position. Example: pairs(0, 4) = 10; pairs(2, 2) = 3 + 4 = 7."""
    return tokens * start + tokens * (tokens + 1) // 2


def _steps(records, instance: str) -> list[tuple[float, float, int, int]]:
    """(start_s, end_s, decodes, first tokens) of each step of ``instance``."""
    tokens = sorted(
        (t, i == 0) for r in records if r.ok and r.instance == instance for i, t in enumerate(r.arrivals_s)
    )
    ends: list[list] = []
    for t, first in tokens:
        if not ends or t - ends[-1][0] > CLUSTER_S:
            ends.append([t, 0, 0])
        ends[-1][2 if first else 1] += 1
    return [(a[0], b[0], b[1], b[2]) for a, b in zip(ends, ends[1:], strict=False)]


def _decode_steps(records) -> list[StepSample]:
    return [
        StepSample(0, 0, decodes, (b - a) * 1e3)
        for a, b, decodes, firsts in _steps(records, "decode")
        if firsts == 0 and decodes > 0
    ]


def _whole_prompt_steps(records, prompt: int) -> list[StepSample]:
    out = []
    for long in (r for r in records if r.ok and r.kind == "long"):
        for a, b, decodes, firsts in _steps(records, long.instance):
            if abs(b - long.arrivals_s[0]) <= CLUSTER_S and firsts == 1:
                out.append(StepSample(prompt, pairs(0, prompt), decodes, (b - a) * 1e3))
    return out


def _chunk_steps(records, prompt: int, short: int, budget: int) -> list[StepSample]:
    out = []
    for long in (r for r in records if r.ok and r.kind == "long"):
        steps = [
            s for s in _steps(records, long.instance) if long.sent_s < s[1] <= long.arrivals_s[0] + CLUSTER_S
        ]
        if not steps or abs(steps[-1][1] - long.arrivals_s[0]) > CLUSTER_S:
            continue
        chunks, seen = [], 0
        last = steps[-1]
        for a, b, decodes, firsts in reversed(steps[:-1]):
            c = budget - decodes - short * firsts
            if c <= 0 or seen + c >= prompt:
                break
            chunks.append((a, b, decodes, firsts, c))
            seen += c
        c_last = prompt - seen
        if not 0 < c_last <= budget - last[2] - short * (last[3] - 1):
            continue  # the walk does not add up: another prefill shared these steps
        chunks.reverse()
        chunks.append((last[0], last[1], last[2], last[3] - 1, c_last))
        start = 0
        for a, b, decodes, firsts, c in chunks:
            if firsts == 0:
                out.append(StepSample(c, pairs(start, c), decodes, (b - a) * 1e3))
            start += c
    return out  # fmt: skip


def capture_steps(run: int = 1, capture: Path = SIGNATURE_CAPTURE) -> list[StepSample]:
    """Every step of one run of the capture that the rules above can read, in setup order (a new list
    each call: the capture is read once)."""
    return list(_capture_steps(run, Path(capture)))


@functools.lru_cache(maxsize=8)
def _capture_steps(run: int, capture: Path) -> tuple[StepSample, ...]:
    manifest, runs = load_capture(capture)
    w = manifest["workload"]
    if run not in manifest["runs"]:
        raise ValueError(f"run: the capture has runs {manifest['runs']}, not {run!r}")
    return tuple(
        _decode_steps(runs[("pd-all", run)])
        + _chunk_steps(runs[("colocated-chunk64", run)], w["long_prompt_tokens"], w["short_prompt_tokens"], 64)
        + _whole_prompt_steps(runs[("colocated", run)], w["long_prompt_tokens"])
    )  # fmt: skip

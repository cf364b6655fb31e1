"""Fit a ``LinearProfile`` from timed observations of a real engine: its steps and idle first tokens.

An observation is one thing a calibration run timed (``lab-02-pd-pair/pdpair/evidence/calibration.py``
records them on a real vLLM pair):

- ``Step``: one engine step's duration and what it carried (prefill tokens and their attention pairs,
  decode sequences, requests joining the batch), read off the token arrival times of the requests it
  served;
- ``FirstToken``: a request's TTFT on an idle instance: the engine steps it took (``steps``) plus the
  request's own overhead (client and proxy, ``request_overhead_ms``) and, for a handed-off request,
  the KV handoff (``link_latency_ms``) - the way ``fleetsim.fleet`` composes a TTFT.

``fit`` solves for the profile's eight costs (``TERMS``) by least squares on RELATIVE errors (a 15 ms
decode step counts as much as a 1.2 s prefill) with every cost >= 0 (non-negative least squares,
an exact search over supports). Why the constraint: each term is a physical cost, and an unconstrained fit lets a
term go negative to absorb another's error - a request overhead of -2.6 ms or a negative per-sequence
cost predicts nothing outside the fitted points. Why idle first tokens: the overhead and the handoff
are fitted from requests that waited for no other step, so they cannot absorb queueing.
Rows with the same composition are merged to their median (robust to a stalled step); each group of
observations (``label``) gets the same total weight, so 200 plain decode steps do not drown the 20
join steps that set conditional P/D's tail.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from fleetsim.profile import LinearProfile

TERMS = ("step_ms_fixed", "per_decode_seq_ms", "per_prefill_token_ms", "per_prefill_pair_ms",
         "per_prefill_token_sq_ms", "per_join_ms", "request_overhead_ms", "link_latency_ms")  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One engine step: ``ms`` long, carrying ``prefill_tokens`` (``prefill_pairs`` attention pairs),
    ``decode_seqs`` decoding sequences and ``joins`` requests joining the batch."""

    ms: float
    prefill_tokens: int = 0
    prefill_pairs: int = 0
    decode_seqs: int = 0
    joins: int = 0
    label: str = "step"

    def row(self) -> list[float]:
        t = self.prefill_tokens
        return [1.0, self.decode_seqs, t, self.prefill_pairs, t * t, self.joins, 0.0, 0.0]


@dataclass(frozen=True)
class FirstToken:
    """A TTFT of ``ms`` on an idle instance: the ``steps`` it took (their ``ms`` is ignored), plus the
    request overhead, plus the KV handoff when ``handoff``."""

    ms: float
    steps: tuple[Step, ...]
    handoff: bool = False
    label: str = "first token"

    def row(self) -> list[float]:
        row = [sum(col) for col in zip(*(s.row() for s in self.steps), strict=True)]
        row[6], row[7] = 1.0, float(self.handoff)
        return row


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0, exactly: the optimum is the least-squares solution on its own
    support, so every support (2^n of them; n is at most the 8 ``TERMS``) is solved and the best
    non-negative one kept. Slower than Lawson-Hanson's active set, but it cannot stall on an
    ill-conditioned problem (a calibration's columns span 1 to 2e6)."""
    n = a.shape[1]
    if n > 12:
        raise ValueError(f"nnls: {n} unknowns is too many for the exhaustive search")
    best, best_r = np.zeros(n), float(np.sum(b * b))
    for mask in range(1, 1 << n):
        cols = [j for j in range(n) if mask >> j & 1]
        z = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
        if (z < 0).any():
            continue
        r = float(np.sum((a[:, cols] @ z - b) ** 2))
        if r < best_r:
            best, best_r = np.zeros(n), r
            best[cols] = z
    return best


def _groups(observations) -> dict[str, dict[tuple, list[float]]]:
    out: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for o in observations:
        out[o.label][tuple(o.row())].append(o.ms)
    return out


def fit(
    observations, base: LinearProfile, fixed: dict[str, float] | None = None
) -> tuple[LinearProfile, dict]:
    """The profile ``base`` with its ``TERMS`` fitted to ``observations`` (``fixed``: terms held at a
    value instead, e.g. ``{"link_latency_ms": 0.0}`` when no handoff was timed). Returns the profile and
    a report: each group's observations, median measured and fitted ms, and median relative error."""
    fixed = dict(fixed or {})
    free = [i for i, t in enumerate(TERMS) if t not in fixed]
    groups = _groups(observations)
    rows, ys, ws = [], [], []
    for per_label in groups.values():
        weight = 1.0 / math.sqrt(len(per_label))  # every group weighs the same in all
        for row, values in per_label.items():
            y = statistics.median(values)
            known = sum(row[i] * fixed[t] for i, t in enumerate(TERMS) if t in fixed)
            rows.append([row[i] for i in free])
            ys.append(y - known)
            ws.append(weight / y)  # relative error
    a = np.asarray(rows) * np.asarray(ws)[:, None]
    b = np.asarray(ys) * np.asarray(ws)
    scale = np.maximum(np.abs(a).max(axis=0), 1e-30)  # columns of very different magnitudes (1 .. 2e6)
    x = nnls(a / scale, b) / scale
    values = dict(fixed)
    values.update({TERMS[i]: float(v) for i, v in zip(free, x, strict=True)})
    profile = dataclasses.replace(base, **{t: round(values[t], 7) for t in TERMS})
    return profile, {"terms": {t: round(values[t], 7) for t in TERMS}, "fixed": sorted(fixed),
                     "groups": residuals(profile, observations)}  # fmt: skip


def predicted_ms(profile: LinearProfile, obs) -> float:
    """What ``profile`` says ``obs`` (a Step or a FirstToken) should have taken."""
    p = profile
    return float(np.dot(obs.row(), [getattr(p, t) for t in TERMS]))


def residuals(profile: LinearProfile, observations) -> dict[str, dict]:
    """Per group: observations, median measured ms, median fitted ms, median relative error (fitted /
    measured - 1)."""
    out = {}
    by_label: dict[str, list] = defaultdict(list)
    for o in observations:
        by_label[o.label].append(o)
    for label, obs in by_label.items():
        meas = [o.ms for o in obs]
        pred = [predicted_ms(profile, o) for o in obs]
        out[label] = {"n": len(obs), "measured_ms": round(statistics.median(meas), 2),
                      "fitted_ms": round(statistics.median(pred), 2),
                      "error": round(statistics.median(p / m - 1 for p, m in zip(pred, meas, strict=True)), 4)}  # fmt: skip
    return out


def jitter_sigma(steps_by_batch: dict[int, list[float]]) -> float:
    """The lognormal sigma of step-to-step noise: the interquartile range of log(step / median of its
    batch size), pooled, / 1.349 (a normal's IQR is 1.349 sigma): robust to the rare stalled step."""
    logs = [math.log(ms / statistics.median(v)) for v in steps_by_batch.values() if len(v) >= 4 for ms in v]
    if len(logs) < 8:
        return 0.0
    q1, _, q3 = statistics.quantiles(logs, n=4)
    return (q3 - q1) / 1.349

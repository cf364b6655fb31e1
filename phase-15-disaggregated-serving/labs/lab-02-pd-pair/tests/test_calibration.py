"""The calibration run's reading of token times (``pdpair.evidence.calibration.derive``; given code, ungraded).

A small engine clock stands in for vLLM: background streams get one token per step, a probe's prompt
rides the steps the scheduler would give it, and every step lasts what a known profile says. What
``derive`` reads back must be those steps, with those compositions, and ``fleetsim.fit`` must then
return the profile.
"""

from __future__ import annotations

import dataclasses

import pytest

from fleetsim.fit import TERMS, fit
from fleetsim.profile import LinearProfile, chunk_pairs, cpu_profile
from pdpair.evidence import calibration as cal

pytestmark = pytest.mark.ungraded
TRUE = dataclasses.replace(cpu_profile(), per_decode_seq_ms=0.4, per_join_ms=3.0)


def req(tag: str, n: int, sent: float, arrivals: list[float]) -> dict:
    return {"tag": tag, "prompt_tokens": n, "sent": sent, "arrivals": arrivals}


def clock(batch: int, t0: float, probes: list[tuple[str, int, int]], budget: int = 2048, steps_after: int = 3,
          split_ms: float = 0.0) -> tuple[list[dict], list[dict], float]:  # fmt: skip
    """``batch`` background streams decoding from ``t0``; each probe (tag, prompt tokens, tokens it
    computes - 1 for a handed-off one) arrives between steps and is scheduled as vLLM would: its prompt
    in chunks of (budget - batch) tokens, first token at the end of its last chunk. ``split_ms``: the
    client reads the probe's token that much after the background's (a busy machine)."""
    bg = [req(f"bg{i}", 32, t0 - 1, [t0 - 0.5]) for i in range(batch)]  # decoding since before t0
    out, t = [], t0
    for b in bg:  # one complete step before anything is timed
        b["arrivals"].append(t)
    for tag, n, compute in probes:
        for _ in range(steps_after):  # plain steps between probes
            t += TRUE.step_ms(0, 0, batch, 0) / 1e3
            for b in bg:
                b["arrivals"].append(t)
        sent, start = t - 0.001, n - compute  # sent while the step before was running
        while start < n:
            c = min(budget - batch, n - start)
            last = start + c == n
            t += TRUE.step_ms(c, chunk_pairs(start, c), batch, 0, int(last)) / 1e3
            for b in bg:
                b["arrivals"].append(t)
            start += c
        out.append(req(tag, n, sent, [t + split_ms / 1e3]))
    return bg, out, t


def test_derive_reads_each_phase_back_with_its_composition():
    bg_a, _, _ = clock(3, 10.0, [("x", 0, 0)] * 4)  # phase A: plain steps only
    bg_b, probes_b, _ = clock(5, 20.0, [("local", 32, 32), ("handed-off", 32, 1)] * 3)
    bg_c, probes_c, _ = clock(3, 40.0, [("chunked", 1500, 1500)], budget=cal.DECODE_BUDGET)
    bg_d, probes_d, _ = clock(1, 60.0, [("whole", n, n) for n in (64, 512, 1500)])
    raw = [
        {"phase": "A", "batch": 3, "background": bg_a, "probes": []},
        {"phase": "B", "batch": 5, "background": bg_b, "probes": probes_b},
        {"phase": "C", "batch": 3, "background": bg_c, "probes": probes_c},
        {"phase": "D", "batch": 1, "background": bg_d, "probes": probes_d},
        {"phase": "E", "batch": 0, "background": [], "probes": [req("idle local", 32, 0.0, [0.09])]},
    ]
    obs, plain = cal.derive(raw)
    by = {}
    for o in obs:
        by.setdefault(o.label, []).append(o)
    assert len(by["plain decode step"]) == 12 and plain == {3: [o.ms for o in by["plain decode step"]]}
    assert all(o.ms == pytest.approx(TRUE.step_ms(0, 0, 3, 0)) for o in by["plain decode step"])
    local = by["local join step"]
    assert len(local) == 3 and all((o.prefill_tokens, o.decode_seqs, o.joins) == (32, 5, 1) for o in local)
    assert local[0].ms == pytest.approx(TRUE.step_ms(32, chunk_pairs(0, 32), 5, 0, 1))
    handed = by["handed-off join step"]
    assert len(handed) == 3 and handed[0].ms == pytest.approx(TRUE.step_ms(1, chunk_pairs(31, 1), 5, 0, 1))
    chunks = by["chunk step"]
    assert sum(o.prefill_tokens for o in chunks) == 1500 and len(chunks) == -(-1500 // 61)
    assert [o.joins for o in chunks] == [0] * (len(chunks) - 1) + [1]
    assert chunks[5].prefill_pairs == chunk_pairs(5 * 61, 61)
    assert chunks[5].ms == pytest.approx(TRUE.step_ms(61, chunk_pairs(5 * 61, 61), 3, 0))
    whole = by["whole-prompt step"]
    assert [o.prefill_tokens for o in whole] == [64, 512, 1500]
    assert whole[2].ms == pytest.approx(TRUE.step_ms(1500, chunk_pairs(0, 1500), 1, 0, 1))
    assert by["idle local first token"][0].ms == pytest.approx(90.0)


def test_a_step_whose_tokens_were_read_apart_is_left_out():
    """On a busy machine the client may read a probe's first token >5 ms after the background tokens of
    the same step: it then looks like its own, very short step, and must not be timed as a join."""
    bg, probes, _ = clock(5, 20.0, [("local", 32, 32)] * 3, split_ms=8.0)
    obs, _ = cal.derive([{"phase": "B", "batch": 5, "background": bg, "probes": probes}])
    assert not [o for o in obs if o.label == "local join step"], obs


def test_what_derive_reads_fits_back_to_the_profile():
    raws = []
    for k in (1, 2, 4, 6, 8):
        raws.append(
            {"phase": "A", "batch": k, "background": clock(k, 10.0 * k, [("x", 0, 0)] * 8)[0], "probes": []}
        )
    bg, probes, _ = clock(5, 200.0, [("local", 32, 32), ("handed-off", 32, 1)] * 6)
    raws.append({"phase": "B", "batch": 5, "background": bg, "probes": probes})
    for k in (1, 3, 5):
        bg, probes, _ = clock(k, 300.0 + 20 * k, [("chunked", 1500, 1500)], budget=cal.DECODE_BUDGET)
        raws.append({"phase": "C", "batch": k, "background": bg, "probes": probes})
    bg, probes, _ = clock(1, 500.0, [("whole", n, n) for n in cal.WHOLE_PROMPTS])
    raws.append({"phase": "D", "batch": 1, "background": bg, "probes": probes})
    idle = TRUE.request_overhead_ms + TRUE.step_ms(32, chunk_pairs(0, 32), 0, 0, 1)
    handed = (TRUE.request_overhead_ms + TRUE.link_latency_ms + TRUE.step_ms(32, chunk_pairs(0, 32), 0, 0)
              + TRUE.step_ms(1, chunk_pairs(31, 1), 0, 0, 1))  # fmt: skip
    raws.append({"phase": "E", "batch": 0, "background": [], "probes": [
        req("idle local", 32, 0.0, [idle / 1e3]), req("idle handed-off", 32, 0.0, [handed / 1e3])] * 4})  # fmt: skip
    obs, _ = cal.derive(raws)
    got, _ = fit(obs, LinearProfile("x", 0.0))
    for term in TERMS:
        assert getattr(got, term) == pytest.approx(getattr(TRUE, term), rel=1e-3, abs=1e-6), term

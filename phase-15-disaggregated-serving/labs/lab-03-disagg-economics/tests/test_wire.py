"""Check your prediction against a real wire: lab-02's capture of a vLLM P/D pair on two hosts.

``../lab-02-pd-pair/captures/wire-cpu`` (recorded by lab-02's ``make record-wire``): the tiny Llama
(8 layers, 4 KV heads, head_dim 64, bf16 = 8 KiB per token) on vLLM's CPU backend, prefill and decode in
two network namespaces joined by one link shaped with ``tc tbf`` to each rate, NIXL reading the KV over
TCP. Each line: the link rate, the prompt length, the bytes NIXL read (decode's metrics), how long the
read took, and the colocated TTFT of the same prompt length.

What NIXL moves is whole KV blocks (32 tokens here): ``ceil(n / 32) x 32`` tokens' worth, 256 KiB a
block. The prediction uses exactly that: whole-block bytes x 8 / the link rate, your ``transfer_ms`` at
efficiency 1. On links of 300 Mbit/s and below the link is the bottleneck and measured / predicted must
lie within ``TOLERANCE`` for every (rate, prompt) median; faster links are CPU-bound on this machine
(the read is not link-limited), so they are not held to the prediction. The verdict is checked where the
measurement is clear (the measured penalty outside ``AMBIGUOUS``: a band the size of the tolerance
around the +10% limit).
"""

from __future__ import annotations

import json
import math
import statistics

import pytest

from disagg.tables import MODELS, Verdict
from labkit import LABS_DIR

CAPTURE = LABS_DIR / "lab-02-pd-pair" / "captures" / "wire-cpu"
TOLERANCE = (0.8, 1.25)  # measured / predicted NIXL read time, per (rate, prompt) median
LINK_BOUND_MBIT = 300  # at or below: the shaped link, not the CPU, sets the read time
MAX_PENALTY = 0.10  # lab-03's default limit: the toll may add 10% to colocated TTFT
AMBIGUOUS = (MAX_PENALTY * TOLERANCE[0], MAX_PENALTY * TOLERANCE[1])
SPIKE = {"itl_p50_ms": 12.0, "itl_p99_ms": 38.0}  # a decode that has the disease: only the wire decides


def _load() -> tuple[dict, list[dict]]:
    manifest = json.loads((CAPTURE / "manifest.json").read_text())
    rows = [json.loads(line) for line in (CAPTURE / "wire.jsonl").read_text().splitlines() if line.strip()]
    return manifest, [r for r in rows if r["status"] == 200 and r["nixl_reads"] >= 1]


MANIFEST, ROWS = _load()
BLOCK = MANIFEST["model"]["block_size"]
MODEL = MODELS["tiny-llama"]


def _groups() -> list[dict]:
    """Medians per (shaped rate, prompt length)."""
    keyed: dict[tuple, list[dict]] = {}
    for r in ROWS:
        if r["rate_mbit"] is not None:
            keyed.setdefault((r["rate_mbit"], r["prompt_tokens"]), []).append(r)
    return [
        {"rate_mbit": rate, "prompt_tokens": n, "kv_bytes": statistics.median(r["kv_bytes"] for r in rs),
         "read_ms": statistics.median(r["nixl_read_ms"] for r in rs), "colocated_ttft_ms": rs[0]["colocated_ttft_ms"]}
        for (rate, n), rs in sorted(keyed.items())
    ]  # fmt: skip


GROUPS = _groups()


@pytest.mark.ungraded
def test_capture_has_what_these_tests_need():
    """Ungraded sanity of the capture itself (the tiny Llama, shaped and link-bound rows, both verdicts)."""
    shape = MANIFEST["model"]
    assert (shape["layers"], shape["kv_heads"], shape["head_dim"], shape["dtype"]) == (8, 4, 64, "bfloat16")
    assert any(g["rate_mbit"] <= LINK_BOUND_MBIT for g in GROUPS)
    assert (MODEL.layers, MODEL.kv_heads, MODEL.head_dim) == (8, 4, 64)


@pytest.mark.lab03_task1
def test_your_bytes_per_token_times_whole_blocks_is_what_nixl_read(impl):
    per_token = impl.kv_bytes_per_token("tiny-llama")
    wrong = []
    for r in ROWS:
        blocks = math.ceil(r["prompt_tokens"] / BLOCK)
        if blocks * BLOCK * per_token != r["kv_bytes"]:
            wrong.append((r["prompt_tokens"], blocks * BLOCK * per_token, r["kv_bytes"]))
    assert not wrong, (
        f"ceil(n / {BLOCK}) whole blocks x {BLOCK} tokens x your {per_token} B per token must be the bytes NIXL "
        f"read; (prompt tokens, yours, measured): {wrong[:5]}")  # fmt: skip


@pytest.mark.lab03_task2
def test_your_transfer_ms_predicts_every_link_bound_read(impl):
    lines, bad = [], []
    for g in GROUPS:
        if g["rate_mbit"] > LINK_BOUND_MBIT:
            continue
        predicted = impl.transfer_ms(g["kv_bytes"], g["rate_mbit"] / 1000)  # Mbit/s -> Gb/s
        ratio = g["read_ms"] / predicted
        lines.append(f"{g['rate_mbit']:>5} Mbit/s {g['prompt_tokens']:>5} tok: measured {g['read_ms']:8.1f} ms, "
                     f"yours {predicted:8.1f} ms, ratio {ratio:.2f}")  # fmt: skip
        if not TOLERANCE[0] <= ratio <= TOLERANCE[1]:
            bad.append(lines[-1])
    assert lines
    assert not bad, (
        f"measured / predicted must lie in {TOLERANCE} (bytes are 8 bits; the rate is in Gb/s = 1e9 bit/s):\n"
        + "\n".join(bad))  # fmt: skip


@pytest.mark.lab03_task4
def test_your_penalty_on_the_measured_toll_crosses_the_limit(impl):
    """Your penalty of each measured toll against the colocated TTFT measured beside it: below the +10%
    limit on the fast links, above it on the slow ones (the TTFTs are noisy on a shared machine, so
    the penalty need not be monotone between neighbouring fast rates)."""
    penalties = {}
    for g in GROUPS:
        p = impl.penalty_ratio(g["read_ms"], g["colocated_ttft_ms"])
        assert p == pytest.approx(g["read_ms"] / g["colocated_ttft_ms"], rel=1e-9), (g, p)
        penalties[(g["rate_mbit"], g["prompt_tokens"])] = p
    assert min(penalties.values()) <= MAX_PENALTY < max(penalties.values()), (
        f"the capture must show the verdict flip: penalties {sorted(penalties.values())}")  # fmt: skip


@pytest.mark.lab03_task5
def test_your_verdict_flips_where_the_measurement_does(impl):
    seen, wrong = set(), []
    for g in GROUPS:
        measured = g["read_ms"] / g["colocated_ttft_ms"]
        if AMBIGUOUS[0] <= measured <= AMBIGUOUS[1]:
            continue
        want = Verdict.YES if measured <= MAX_PENALTY else Verdict.NO_SLOW_LINK
        got = impl.should_disaggregate(
            "tiny-llama", g["prompt_tokens"], MANIFEST["max_tokens"], g["rate_mbit"] / 1000,
            g["colocated_ttft_ms"], SPIKE["itl_p50_ms"], SPIKE["itl_p99_ms"], max_penalty=MAX_PENALTY,
        )  # fmt: skip
        seen.add(want)
        if got.verdict != want:
            wrong.append(f"{g['rate_mbit']} Mbit/s, {g['prompt_tokens']} tok: measured penalty {measured:.1%} -> "
                         f"{want.name}, yours {got.verdict.name} ({got.reason})")  # fmt: skip
    assert seen == {Verdict.YES, Verdict.NO_SLOW_LINK}, f"the capture must hold both verdicts, got {seen}"
    assert not wrong, "\n".join(wrong)

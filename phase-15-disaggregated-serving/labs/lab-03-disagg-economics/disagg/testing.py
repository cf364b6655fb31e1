"""What lab-03's tests share: the non-numbers, the error rule, and lab-02's wire capture (given code).

``load_wire()`` reads ``lab-02-pd-pair/captures/wire-cpu`` (recorded by lab-02's ``make record-wire``):
lab-02's tiny Llama on vLLM's CPU backend, prefill and decode in two network namespaces joined by one
link shaped with ``tc tbf`` to each rate, NIXL reading the KV over TCP after prefill (vLLM 0.32's NIXL
connector does not stream per layer: ``save_kv_layer`` and ``wait_for_layer_load`` are no-ops in
``vllm/distributed/kv_transfer/kv_connector/v1/nixl/connector.py``). Each row: the link rate, the
prompt length, the bytes NIXL read (decode's metrics), how long the read took, and the colocated TTFT
of the same prompt length measured beside it. The unshaped link's groups (``rate_mbit`` None) carry
``read_mbit``, the rate their read ran at: a lower bound on that link's line rate, which is not known.
"""

from __future__ import annotations

import json
import statistics

import pytest

from labkit import LABS_DIR

NAN, INF = float("nan"), float("inf")
WIRE_CAPTURE = LABS_DIR / "lab-02-pd-pair" / "captures" / "wire-cpu"
LINK_BOUND_MBIT = (
    300  # at or below, the shaped link set the read time on every recording (the quiet one: up to 3000)
)


def raises(exc: type[Exception], name: str):
    """The lab's one error rule: `exc`, its message starting with the argument's name and a colon."""
    return pytest.raises(exc, match=rf"^{name}: ")


def load_wire() -> tuple[dict, list[dict], list[dict]]:
    """(manifest, every read that succeeded, medians per (link rate, prompt length); the unshaped link's
    rate is None and its groups come last)."""
    manifest = json.loads((WIRE_CAPTURE / "manifest.json").read_text())
    rows = [
        json.loads(line) for line in (WIRE_CAPTURE / "wire.jsonl").read_text().splitlines() if line.strip()
    ]
    rows = [r for r in rows if r["status"] == 200 and r["nixl_reads"] >= 1]
    keyed: dict[tuple, list[dict]] = {}
    for r in rows:
        keyed.setdefault((r["rate_mbit"], r["prompt_tokens"]), []).append(r)
    groups = [
        {"rate_mbit": rate, "prompt_tokens": n, "kv_bytes": statistics.median(r["kv_bytes"] for r in rs),
         "read_ms": statistics.median(r["nixl_read_ms"] for r in rs),
         "colocated_ttft_ms": statistics.median(r["colocated_ttft_ms"] for r in rs)}
        for (rate, n), rs in sorted(keyed.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1]))
    ]  # fmt: skip
    for g in groups:
        g["read_mbit"] = g["kv_bytes"] * 8 / (g["read_ms"] * 1e3)
    return manifest, rows, groups


def link_mbit(group: dict) -> float:
    """The link's rate for a group: the shaped rate, or for the unshaped link the rate its read ran at."""
    return group["rate_mbit"] if group["rate_mbit"] is not None else group["read_mbit"]

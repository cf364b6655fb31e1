"""The lab-03 decision tool and plot run end to end (ungraded: given code, run on the solution)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1]  # the lab folder
ENV = dict(os.environ, LAB_IMPL="solution", MPLBACKEND="Agg")


@pytest.mark.ungraded
def test_decide_prints_the_phase_verdicts():
    out = subprocess.run(
        [sys.executable, str(LAB / "tools" / "disagg_decide.py"), "--phase"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    verdicts = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("VERDICT:")]
    # 4-5: TTFT modelled at 55% of an H100's peak: one HDR link serialized, then its NDR NIC streamed per
    # layer; 6: a 32k-token prompt whose stall outweighs a slow wire
    assert verdicts == ["YES", "NO_SLOW_LINK", "NO_NO_DISEASE", "NO_SLOW_LINK", "YES", "YES"], out.stdout
    assert "19.7%" in out.stdout and "0.3%" in out.stdout, out.stdout


def decide(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(LAB / "tools" / "disagg_decide.py"), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.ungraded
@pytest.mark.parametrize(
    "args, name",
    [
        (["--gbps", "0"], "link_gbps"),
        (["--gbps", "nan"], "link_gbps"),
        (["--ttft-ms", "nan"], "ttft_ms"),
        (["--ttft-ms", "inf"], "ttft_ms"),
        (["--itl-p99-ms", "nan"], "itl_p99_ms"),
        (["--prompt-tokens", "-5"], "prompt_tokens"),
        (["--max-penalty", "nan"], "max_penalty"),
        (["--efficiency", "nan"], "efficiency"),
        (["--mfu", "nan"], "mfu"),
        (["--handoff-ms", "-1", "--prefill-tokens-per-s", "1000"], "handoff_ms"),
        (["--decode-batch", "-1"], "decode_batch"),
        (["--stall-ms", "nan"], "stall_ms"),
    ],
)
def test_decide_rejects_bad_input_with_a_clear_message(args, name):
    out = decide(*args)
    assert out.returncode == 2 and name in out.stderr and "VERDICT" not in out.stdout, (
        out.stdout,
        out.stderr,
    )


@pytest.mark.ungraded
def test_decide_models_ttft_and_prints_the_knob():
    out = decide(
        "--mfu", "0.55", "--decode-batch", "0", "--handoff-ms", "5", "--prefill-tokens-per-s", "10000"
    )
    assert out.returncode == 0, out.stderr
    assert "VERDICT: NO_NO_DISEASE" in out.stdout and "local_prefill_max_tokens: 1051" in out.stdout, (
        out.stdout
    )
    out = decide("--mfu", "0.55", "--decode-batch", "1", "--stall-ms", "1", "--layerwise")
    assert "VERDICT: YES" in out.stdout and "exposed toll 0.34 ms" in out.stdout, out.stdout


@pytest.mark.ungraded
def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "b.png"
    out = subprocess.run(
        [sys.executable, str(LAB / "tools" / "plot_breakeven.py"), "--out", str(png)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the plot must be a PNG"

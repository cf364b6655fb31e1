"""The lab-03 decision tool and plot run end to end (ungraded: given code, run on the solution)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parent
ENV = dict(os.environ, LAB_IMPL="solution", MPLBACKEND="Agg")


@pytest.mark.ungraded
def test_decide_prints_the_three_phase_verdicts():
    out = subprocess.run(
        [sys.executable, str(LAB / "disagg_decide.py"), "--phase"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    verdicts = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("VERDICT:")]
    assert verdicts == ["YES", "NO_SLOW_LINK", "NO_NO_DISEASE"], out.stdout


@pytest.mark.ungraded
def test_decide_rejects_bad_input_with_a_clear_message():
    out = subprocess.run(
        [sys.executable, str(LAB / "disagg_decide.py"), "--gbps", "0"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "link_gbps" in out.stderr, out.stderr


@pytest.mark.ungraded
def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "b.png"
    out = subprocess.run(
        [sys.executable, str(LAB / "plot_breakeven.py"), "--out", str(png)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the plot must be a PNG"

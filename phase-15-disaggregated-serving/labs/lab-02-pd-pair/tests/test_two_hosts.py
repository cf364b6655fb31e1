"""Ungraded: two hosts on one machine (``pdpair.hosts``) and the drills only two hosts can run.

Without root, ``ip`` or ``tc`` every test here skips with ``pdpair.hosts.unavailable()``'s reason
(``PDPAIR_REQUIRE_HOSTS=1`` makes that an error instead, for CI).
CPU (root, no vLLM, seconds): the link is made, carries bytes at the shaped rate, and is ALWAYS deleted:
after the block, after an exception, after Ctrl-C (SIGINT), SIGTERM, and (by the next run) SIGKILL; a
delay without the kernel's netem names the module; as ``nobody`` the skip reason names the rootless
command, and the module works inside a user namespace (``rootless_argv``).
``vllm`` tier, a real pair on two hosts (solution.py's launch plans: these check vLLM and the plumbing,
not student work), each drill asserting what the recorded runs showed (README, "Two hosts on one machine"):

- ``localhost_side_channel_across_hosts``: prefill advertises its side channel on 127.0.0.1; decode's
  handshake goes to ITS OWN loopback, where nothing listens;
- the link slowed mid-run: the next transfers take bytes x 8 / rate, the outputs stay identical;
- the link cut during a long prompt's transfer, under ``fail`` and under ``recompute``; and for 40 s,
  past the KV lease (over a minute: ``PDPAIR_LONG_DRILLS=1``, set by ``make test-vllm``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from labkit.impl import load_module
from pdpair import hosts as hostmod
from pdpair.evidence import oracle
from pdpair.evidence.identity import with_logits_mode
from pdpair.load.client import metric_sum, stream_request
from pdpair.pair.runner import get_text, prepare_spec, run_pair
from pdpair.pair.spec import load_pair_spec, with_side
from pdpair.proxy import ProxyConfig

pytestmark = pytest.mark.ungraded
LAB = Path(__file__).resolve().parents[1]  # the lab folder
LOG_DIR = LAB / "out" / "logs"
REASON = hostmod.unavailable()
if REASON is not None and os.environ.get("PDPAIR_REQUIRE_HOSTS") == "1":  # CI: must run, not skip
    pytest.fail(f"PDPAIR_REQUIRE_HOSTS=1 but {REASON}", pytrace=False)
needs_hosts = pytest.mark.skipif(REASON is not None, reason=str(REASON))
needs_long_drills = pytest.mark.skipif(  # > 60 s each: `make test-vllm` runs them, `make test` does not
    os.environ.get("PDPAIR_LONG_DRILLS") != "1",
    reason="a drill of over a minute: PDPAIR_LONG_DRILLS=1 runs it",
)
KV_BYTES_PER_TOKEN = 8 * 2 * 4 * 64 * 2  # the tiny Llama: 8 layers, K and V, 4 KV heads, head_dim 64, bf16
BLOCK = 32
STARTUP_S = 900.0  # the runner deadline: on a machine shared by many jobs a start-up took 5+ min


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


def _fetch_s(addr: str, port: int, timeout_s: float = 10.0) -> float:
    import socket

    t0 = time.monotonic()
    with socket.create_connection((addr, port), timeout=timeout_s) as c:
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
            hosts.cut()
            with pytest.raises(OSError):  # nothing crosses a cut link (the connect times out)
                _fetch_s(hosts.prefill_addr, port, timeout_s=1.5)
            hosts.restore()
            assert (
                _fetch_s(hosts.prefill_addr, port) < 5
            )  # back (the first connect may wait out the link coming up)
        finally:
            server.kill()
            server.wait()
    assert not _ns_exists(name)
    assert hostmod.our_namespaces() == [] or all(
        not n.startswith(f"pdpair-{os.getpid()}-") for n in hostmod.our_namespaces()
    )


@needs_hosts
def test_a_delay_without_netem_names_the_module_and_changes_nothing():
    """This machine's kernel has no ``sch_netem`` (``tc`` says "Specified qdisc kind is unknown"): a
    delay must fail with a message naming the module, and leave the rate shaping as it was."""
    with hostmod.two_hosts() as hosts:
        hosts.shape(rate_mbit=40)
        if hosts.netem_missing() is None:  # a kernel with netem: the delay is set
            hosts.shape(rate_mbit=40, delay_ms=5)
            assert "netem" in hosts.qdisc() and "delay 5ms" in hosts.qdisc()
            return
        with pytest.raises(hostmod.HostsError, match="sch_netem"):
            hosts.shape(delay_ms=5)
        assert "rate 40Mbit" in hosts.qdisc() and hosts.rate_mbit == 40 and hosts.delay_ms is None


def _as_nobody(fn) -> object:
    """``fn()``'s JSON-able result, computed in a forked child that dropped to uid/gid 65534 (nobody)."""
    import json

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec (this machine's Python lives under /root, unreadable to nobody)
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.chdir("/")
            out = json.dumps({"ok": fn()})
        except BaseException as err:  # noqa: BLE001 - carried back to the test
            out = json.dumps({"error": repr(err)})
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = json.loads(f.read())
    os.waitpid(pid, 0)
    assert "error" not in data, data
    return data["ok"]


@pytest.mark.skipif(os.geteuid() != 0 or REASON is not None, reason="needs root to become nobody")
def test_without_root_the_reason_names_what_is_missing_and_the_rootless_command():
    why, rootless = _as_nobody(lambda: [hostmod.unavailable(), hostmod.rootless_unavailable()])
    assert why is not None and "CAP_NET_ADMIN" in why and "uid 65534" in why, why
    if rootless is None:  # this machine: unprivileged user namespaces may make namespaces, links, tbf
        assert "python -m pdpair.hosts rootless --" in why, why
    else:
        assert "rootless mode is not possible here" in why and rootless in why, why


_ROOTLESS_SCRIPT = (
    "import json, socket, subprocess, sys, time\n"
    "from pdpair import hosts as h\n"
    "assert h.unavailable() is None, h.unavailable()\n"
    "with h.two_hosts() as t:\n"
    "    srv = subprocess.Popen(t.exec_prefix() + [sys.executable, '-c', 'import socket\\n"
    "s = socket.socket(); s.bind((\"' + t.prefill_addr + '\", 24999)); s.listen(); print(1, flush=True)\\n"
    'while True:\\n    c, _ = s.accept(); c.sendall(b"x" * 2000000); c.close()\'], stdout=subprocess.PIPE)\n'
    "    srv.stdout.readline()\n"
    "    t.shape(rate_mbit=20)\n"
    "    t0 = time.monotonic()\n"
    "    with socket.create_connection((t.prefill_addr, 24999), timeout=10) as c:\n"
    "        n = 0\n"
    "        while (b := c.recv(1 << 20)):\n"
    "            n += len(b)\n"
    "    took = time.monotonic() - t0\n"
    "    srv.kill(); srv.wait()\n"
    "    made = t.namespace\n"
    "print(json.dumps({'bytes': n, 'took_s': took, 'left': h.our_namespaces(), 'made': made}))\n"
)


@needs_hosts
def test_two_hosts_inside_a_user_namespace():
    """The rootless path (``rootless_argv``): the same module, run as root of a new user namespace (as
    this user; on this machine unprivileged users may do the same, see the test above), makes the
    link, shapes it and deletes it, and the machine's own namespace list never sees it."""
    import json

    before = hostmod.our_namespaces()
    out = subprocess.run(hostmod.rootless_argv([sys.executable, "-c", _ROOTLESS_SCRIPT]), capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    want = (2_000_000 - 256 * 1024) * 8 / 20e6  # tbf lets its 256 KiB bucket through at once
    assert seen["bytes"] == 2_000_000 and 0.8 < seen["took_s"] / want < 1.3, seen
    assert seen["left"] == [] and seen["made"].startswith("pdpair-")
    assert hostmod.our_namespaces() == before, "nothing was made in the machine's own namespaces"


@needs_hosts
def test_hosts_are_deleted_after_an_exception():
    with pytest.raises(RuntimeError), hostmod.two_hosts() as hosts:
        name = hosts.namespace
        raise RuntimeError("a failing test")
    assert not _ns_exists(name)


_HOLDER = (
    "import sys, time\n"
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


# ------------------------------------------------------------------------------------------ vllm tier


def _prompt(n: int) -> list[int]:
    rng = random.Random()
    return [rng.randrange(3, 32000) for _ in range(n)]


def _body(model: str, prompt: list[int], max_tokens: int = 4) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True,
            "stream": True, "return_token_ids": True}  # fmt: skip


def _send(url: str, body: dict, timeout_s: float = 150.0):
    async def go():
        async with aiohttp.ClientSession() as session:
            return await stream_request(session, url, "/v1/completions", body, timeout_s=timeout_s)

    t0 = time.monotonic()
    res = asyncio.run(asyncio.wait_for(go(), timeout_s + 10))
    return res, time.monotonic() - t0


def _ids(res) -> list[int]:
    return [t for e in res.events for c in e.get("choices") or [] for t in c.get("token_ids") or []]


def _metric(url: str, name: str) -> float:
    return metric_sum(get_text(url + "/metrics"), name)


@pytest.fixture(scope="module")
def solution():
    return load_module(LAB / "solution.py")


@pytest.fixture(scope="module")
def base():
    # prefill also answers the drills' colocated references, with its raw logits for the output oracle
    return with_logits_mode(prepare_spec(load_pair_spec(LAB / "pair.cpu.yaml")))


def _pair_on_hosts(solution, spec, proxy_config=None, **side_changes):
    """A context: two hosts, the pair on them (prefill changed by ``side_changes``), yields (hosts, pair)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        with hostmod.two_hosts() as hosts:
            spec2 = hostmod.on_two_hosts(spec, hosts)
            if side_changes:
                spec2 = with_side(spec2, "prefill", **side_changes)
            with run_pair(solution, spec2, log_dir=LOG_DIR, wrap_plan=hosts.wrap_plan,
                          startup_timeout_s=STARTUP_S, proxy_config=proxy_config) as pair:  # fmt: skip
                yield hosts, pair
        assert not _ns_exists(hosts.namespace)

    return ctx()


@pytest.mark.vllm
@needs_hosts
def test_localhost_side_channel_across_hosts(solution, base):
    """Prefill binds and advertises its side channel on 127.0.0.1 (its own namespace's loopback). Decode
    asks ITS loopback, where nothing answers: vLLM 0.32's handshake waits its 5 s receive timeout
    (``nixl/base_worker.py``: ``zmq.RCVTIMEO`` 5000), logs ``handshake_failed``, and under ``fail`` the
    request ends in the stream's error event (HTTP 200, no token, error code 500): recorded 6.5 s in all.
    """
    with _pair_on_hosts(solution, base, side_channel_host="127.0.0.1") as (hosts, pair):
        res, took = _send(pair.proxy.url, _body(pair.model, _prompt(256)), timeout_s=120)
        print(f"localhost side channel across hosts: HTTP {res.status}, {len(_ids(res))} tokens, "
              f"error {res.error}, {took:.1f} s, mode {res.headers.get('X-PD-Mode')}")  # fmt: skip
        log = pair.decode.log_text()
        assert res.status == 200 and not _ids(res) and res.error and res.error.get("code") == 500, (
            f"decode cannot reach a side channel on prefill's loopback: HTTP 200, no token, an error event "
            f"with code 500 were recorded; got HTTP {res.status}, {len(_ids(res))} tokens, error {res.error}")  # fmt: skip
        assert 5.0 <= took < 60, f"the handshake's 5 s receive timeout, then the error; took {took:.1f} s"
        assert "handshake_failed" in log and "zmq.error.Again" in log, (
            "decode's log names the failed handshake"
        )
        assert pair.decode.healthy() and pair.prefill.healthy(), (
            "both servers stay up (a per-request failure)"
        )


@pytest.fixture(scope="class")
def fail_pair(solution, base):
    """Two hosts and the pair on them (decode's policy ``fail``), shared by the slow-link and cut drills."""
    # decode may stay silent past the proxy's default 60 s while a long cut lasts: the client must see
    # what vLLM does, not the proxy's timeout
    cfg = ProxyConfig(prefill_timeout_s=60.0, decode_timeout_s=150.0)
    with _pair_on_hosts(solution, base, proxy_config=cfg) as (hosts, pair):
        _send(pair.proxy.url, _body(pair.model, _prompt(64)))  # warm-up: the handshake
        yield hosts, pair


class TestFailPair:
    """One pair (decode's policy ``fail``) for both drills; stopped when the class ends."""

    @pytest.mark.vllm
    @needs_hosts
    def test_link_slowed_mid_run(self, fail_pair):
        """The same prompt length unshaped, then with the link slowed to 50 Mbit/s while the pair runs."""
        hosts, pair = fail_pair
        d, reads = pair.decode.url, []
        for rate in (None, 50):
            hosts.shape(rate_mbit=rate)
            before = (
                _metric(d, "vllm:nixl_xfer_time_seconds_sum"),
                _metric(d, "vllm:nixl_bytes_transferred_sum"),
            )
            res, _ = _send(pair.proxy.url, _body(pair.model, _prompt(1024)))
            after = (
                _metric(d, "vllm:nixl_xfer_time_seconds_sum"),
                _metric(d, "vllm:nixl_bytes_transferred_sum"),
            )
            assert res.status == 200 and len(_ids(res)) == 4 and res.error is None, (res.status, res.error)
            reads.append(((after[0] - before[0]) * 1e3, after[1] - before[1]))
        hosts.shape()
        (fast_ms, nbytes), (slow_ms, nbytes2) = reads
        want = nbytes2 * 8 / 50e6 * 1e3
        print(f"slowed mid-run: 1024 tokens, {nbytes2:.0f} B: unshaped {fast_ms:.1f} ms, 50 Mbit/s {slow_ms:.1f} ms "
              f"(bytes x 8 / rate = {want:.1f} ms)")  # fmt: skip
        assert nbytes == nbytes2 == -(-1024 // BLOCK) * BLOCK * KV_BYTES_PER_TOKEN, "whole blocks, same bytes"
        assert 0.8 < slow_ms / want < 1.25, (
            f"the slowed read must take bytes x 8 / rate: {slow_ms:.0f} vs {want:.0f} ms"
        )
        assert fast_ms < slow_ms / 3

    @pytest.mark.vllm
    @needs_hosts
    def test_link_cut_under_fail(self, fail_pair):
        hosts, pair = fail_pair
        assert_cut_survived(cut_drill(hosts, pair, "fail"))

    @pytest.mark.vllm
    @pytest.mark.slow
    @needs_long_drills
    @needs_hosts
    def test_link_cut_longer_than_the_lease(self, fail_pair):
        """The link cut for ``LONG_CUT_S`` (past the 30 s KV lease, ``kv_lease_duration``'s default in
        ``nixl/base_scheduler.py``) mid-transfer. Recorded here (README, "Two hosts on one machine"):
        decode's heartbeats cannot reach prefill, so prefill's lease runs out during the cut and it logs
        ``Releasing expired KV blocks`` (``nixl/base_worker.py``, ``_reap_expired_send_leases``): the
        blocks go back to its free pool. Decode knows nothing of it: its read resumes when the link is
        back, completes (no failed transfer, the client gets HTTP 200 and its tokens), and prefill then
        logs ``Potentially invalid KV blocks ... may have expired`` (``nixl/pull_worker.py``,
        ``_get_new_notifs``). On an idle prefill nothing had reused the freed blocks, so the output was
        still the colocated one; under load another request could take them first (not drilled)."""
        hosts, pair = fail_pair
        p_log0 = len(pair.prefill.log_text())
        seen = cut_drill(hosts, pair, "fail", cut_s=LONG_CUT_S)
        p_log = pair.prefill.log_text()[p_log0:]
        seen |= {"prefill_released_expired": p_log.count("Releasing expired KV blocks"),
                 "prefill_read_after_expiry": p_log.count("Potentially invalid KV blocks"),
                 "healthy": pair.prefill.healthy() and pair.decode.healthy()}  # fmt: skip
        print(f"long cut: {seen}")
        want = {"status": 200, "tokens": 4, "error": None, "mode": "disaggregated", "nixl_num_failed_transfers": 0,
                "nixl_xfer_time_seconds_count": 1, "nixl_bytes_transferred_sum": 60 * BLOCK * KV_BYTES_PER_TOKEN,
                "prefill_released_expired": 1, "prefill_read_after_expiry": 1, "healthy": True}  # fmt: skip
        got = {k: seen[k] for k in want}
        assert got == want, f"a {LONG_CUT_S:.0f} s cut mid-transfer:\n want {want}\n got  {got}"
        assert seen["took_s"] >= LONG_CUT_S, "the request waited out the cut"


def cut_drill(hosts, pair, policy: str, cut_s: float | None = None) -> dict:
    """Cut the link 0.5 s after decode takes a 1900-token prompt's handoff at 30 Mbit/s (60 blocks,
    15.7 MB: ~4.2 s of transfer), keep it cut ``cut_s`` (default ``CUT_S``), restore it; returns what the
    client, decode and prefill showed."""
    cut_s = CUT_S if cut_s is None else cut_s
    model, d, p = pair.model, pair.decode.url, pair.prefill.url
    hosts.shape(rate_mbit=30)
    before = {k: _metric(d, k) for k in DECODE_COUNTERS} | {k: _metric(p, k) for k in PREFILL_COUNTERS}
    out: dict = {}

    prompt = _prompt(1900)

    def client():
        out["res"], out["took"] = _send(pair.proxy.url, _body(model, prompt), 150)

    t = threading.Thread(target=client)
    t.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and t.is_alive():  # decode has the request: its KV pull has begun
        if _metric(d, "vllm:num_requests_waiting") + _metric(d, "vllm:num_requests_running") > 0:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    hosts.cut()
    time.sleep(cut_s)
    hosts.restore()
    t.join(200)
    time.sleep(2.0)
    after = {k: _metric(d, k) for k in DECODE_COUNTERS} | {k: _metric(p, k) for k in PREFILL_COUNTERS}
    res, took = out["res"], out["took"]
    seen = {"status": res.status, "tokens": len(_ids(res)), "error": res.error, "took_s": round(took, 1),
            "mode": res.headers.get("X-PD-Mode"), "fallback": res.headers.get("X-PD-Fallback-Reason"),
            **{k.removeprefix("vllm:"): after[k] - before[k] for k in after}}  # fmt: skip
    print(f"cut {cut_s:.0f} s mid-transfer ({policy}): {seen}")
    hosts.shape()
    # prefill alone, a plain request: the colocated answer, judged by the output oracle (docs/oracle.md)
    reference, _ = _send(p, oracle.with_logits(_body(model, prompt)))
    ref = oracle.reference_from_answer(events=reference.events, dtype=pair.spec.prefill.dtype)
    verdict = oracle.judge(ref, _ids(res))
    seen["oracle"] = verdict.outcome
    seen["same_as_colocated"] = verdict.ok and len(ref.ids) == 4
    return seen


def assert_cut_survived(seen: dict) -> None:
    """What both policies showed for a 10 s cut (shorter than the 30 s KV lease): TCP retransmits, the one
    NIXL read completes after the link is back, the client gets the colocated answer, nothing fails."""
    want = {"status": 200, "tokens": 4, "error": None, "mode": "disaggregated", "nixl_num_failed_transfers": 0,
            "nixl_xfer_time_seconds_count": 1, "nixl_bytes_transferred_sum": 60 * BLOCK * KV_BYTES_PER_TOKEN,
            "nixl_num_kv_expired_reqs": 0, "same_as_colocated": True}  # fmt: skip
    got = {k: seen[k] for k in want}
    assert got == want, f"a {CUT_S:.0f} s cut mid-transfer:\n want {want}\n got  {got}"
    assert seen["took_s"] >= CUT_S, "the request waited out the cut"


DECODE_COUNTERS = (
    "vllm:nixl_num_failed_transfers",
    "vllm:nixl_xfer_time_seconds_count",
    "vllm:nixl_bytes_transferred_sum",
)
PREFILL_COUNTERS = ("vllm:nixl_num_kv_expired_reqs", "vllm:nixl_num_notifications_after_expiry")
CUT_S = 10.0
LONG_CUT_S = 40.0  # > the 30 s lease plus one 5 s heartbeat interval


@pytest.mark.vllm
@needs_hosts
def test_link_cut_under_recompute(solution, base):
    spec = with_side(base, "decode", kv_load_failure_policy="recompute")
    with _pair_on_hosts(solution, spec) as (hosts, pair):
        _send(pair.proxy.url, _body(pair.model, _prompt(64)))  # warm-up: handshake
        assert_cut_survived(cut_drill(hosts, pair, "recompute"))

"""Ungraded: the runner's ports (pdpair.pair.procs / pdpair.pair.runner), not student work.

CPU: ports are picked outside the kernel's ephemeral range; a port a plan needs (HTTP, NIXL side channel
with vLLM's data-parallel offset) that is taken before start-up is found before anything starts, naming
its owner; a start-up whose log says a port is taken fails in seconds (not at the 300 s deadline); both
are retried on fresh ports. ``vllm`` tier: another process
holds the NIXL side-channel port the runner chose, and the real pair still comes up on new ports; what
vLLM 0.32 itself does with a taken side-channel port (never healthy, never exits) is asserted here.
These tests load solution.py themselves: they check the plumbing, whatever LAB_IMPL grades.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from labkit.impl import load_module
from pdpair.load.churn import churn
from pdpair.pair import procs
from pdpair.pair.procs import PortTakenError, StartupError, pick_port, start_all, stop_all, taken_port_in
from pdpair.pair.runner import prepare_spec, run_pair, start_with_retries, with_fresh_ports
from pdpair.pair.spec import LaunchPlan, load_pair_spec

pytestmark = pytest.mark.ungraded
LAB = Path(__file__).resolve().parents[1]  # the lab folder
LOG_DIR = LAB / "out" / "logs"
STARTUP_S = 900.0  # per start-up: on a machine shared by many jobs one took over 5 min


def _listener(port: int, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((host, port))
    s.listen()
    return s


def _fake_plan(name: str, port: int) -> LaunchPlan:
    argv = [sys.executable, "-m", "pdpair.testing.fakes", "--role", "decode", "--port", str(port)]
    return LaunchPlan(name=name, argv=argv, env={}, url=f"http://127.0.0.1:{port}")


def _hold_port(port: int) -> subprocess.Popen:
    """Another process listening on 127.0.0.1:port until stopped."""
    code = (
        "import socket, sys, time\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
        "print('held', flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


# ------------------------------------------------------------------------------------------------ CPU


def test_picked_ports_are_outside_the_ephemeral_range_free_and_distinct():
    low, high = procs.ephemeral_range()
    ports = [pick_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports:
        assert procs.PORT_FLOOR <= port <= 65535 and not low <= port <= high, (port, low, high)
        assert procs.port_is_free(port)


def test_ephemeral_range_falls_back_to_linux_default(tmp_path):
    assert procs.ephemeral_range(tmp_path / "missing") == procs.EPHEMERAL_DEFAULT
    (tmp_path / "range").write_text("1024\t9999\n")
    assert procs.ephemeral_range(tmp_path / "range") == (1024, 9999)


def test_a_taken_port_is_not_picked():
    port = pick_port()
    with _listener(port):
        assert not procs.port_is_free(port)


@pytest.mark.parametrize(
    "line, port",
    [
        ("zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:43219')", 43219),
        (
            "OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8100): "
            "address already in use",
            8100,
        ),  # fmt: skip
        ("OSError: [Errno 98] Address already in use", None),
    ],
)
def test_taken_port_is_read_from_a_log_line(line, port):
    assert taken_port_in(f"INFO starting\n{line}\nINFO more\n") == (line, port)
    assert taken_port_in("INFO all good\n") is None


KV_CONFIG = '{"kv_connector": "NixlConnector", "kv_role": "kv_producer"}'


def _nixl_plan(name: str, port: int, side_channel_port: int, *extra: str) -> LaunchPlan:
    argv = [sys.executable, "-m", "pdpair.testing.fakes", "--role", "decode", "--port", str(port),
            "--kv-transfer-config", KV_CONFIG, *extra]  # fmt: skip
    env = {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": str(side_channel_port)}
    return LaunchPlan(name=name, argv=argv, env=env, url=f"http://127.0.0.1:{port}")


def test_plan_ports_are_http_and_the_side_channel_per_data_parallel_rank():
    http, sc = pick_port(), pick_port()
    assert procs.plan_ports(_fake_plan("decode", http)) == [("http", "127.0.0.1", http)]
    assert procs.plan_ports(_nixl_plan("prefill", http, sc)) == [
        ("http", "127.0.0.1", http),
        ("nixl side channel", "127.0.0.1", sc),
    ]
    two = procs.plan_ports(_nixl_plan("prefill", http, sc, "--data-parallel-size", "2"))
    assert [p for _, _, p in two] == [http, sc, sc + 1]
    ranked = procs.plan_ports(
        _nixl_plan("prefill", http, sc, "--data-parallel-size=4", "--data-parallel-rank=3")
    )
    assert [p for _, _, p in ranked] == [http, sc + 3]
    solution = load_module(LAB / "solution.py")
    spec = with_fresh_ports(load_pair_spec(LAB / "pair.cpu.yaml"))
    plans = solution.launch_plans(spec, python=sys.executable)
    assert procs.plan_ports(plans["prefill"]) == [
        ("http", spec.prefill.host, spec.prefill.port),
        ("nixl side channel", spec.prefill.side_channel_host, spec.prefill.side_channel_port),
    ]


@pytest.mark.parametrize(
    "extra, offset", [((), 0), (("--data-parallel-size", "2"), 1)], ids=["dp1", "dp2-rank1"]
)
def test_a_taken_side_channel_port_is_found_before_starting_and_names_its_owner(extra, offset):
    """vLLM would load the model first and then wait forever on the bind: here nothing is started."""
    http, sc = pick_port(), pick_port()
    holder = _hold_port(sc + offset)
    started: list = []
    try:
        t0 = time.monotonic()
        with pytest.raises(PortTakenError) as err:
            start_all([_nixl_plan("prefill", http, sc, *extra)], LOG_DIR, timeout_s=60, started=started)
        assert time.monotonic() - t0 < 2 and started == [], "found before anything started"
    finally:
        procs.stop_processes([holder])
    assert err.value.port == sc + offset and err.value.instance_name == "prefill"
    msg = str(err.value)
    assert f"nixl side channel port 127.0.0.1:{sc + offset} is taken" in msg
    assert f"by pid {holder.pid} (" in msg, msg


def test_a_port_left_in_time_wait_by_a_stopped_server_is_not_taken():
    """The colocated baseline and then the pair reuse one spec's ports (demo.py): the first server's
    connections linger in TIME_WAIT after it stops, which a server's SO_REUSEADDR bind ignores (Linux:
    when the lingering socket's listener had SO_REUSEADDR too, as uvicorn's has)."""
    port = pick_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's listener does
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
    client.close()
    server.close()
    time.sleep(0.2)
    assert not procs.port_is_free(port), "TIME_WAIT blocks a plain bind"
    procs.check_ports_free([_fake_plan("prefill", port)])  # no PortTakenError


def test_port_owner_names_the_listening_process():
    port = pick_port()
    holder = _hold_port(port)
    try:
        assert procs.port_owner(port).startswith(f"pid {holder.pid} (")
    finally:
        procs.stop_processes([holder])
    assert procs.port_owner(port) is None


def test_a_server_that_hangs_on_a_taken_port_fails_in_seconds():
    """Like vLLM's NIXL listener: a thread dies on the bind, the process stays up and never healthy."""
    port = pick_port()
    code = (
        "import socket, threading, time, traceback\n"
        "def listen():\n"
        "    try:\n"
        f"        socket.socket().bind(('127.0.0.1', {port}))\n"
        "    except OSError as e:  # worded as zmq words it\n"
        f"        raise OSError(e.errno, e.strerror + \" (addr='tcp://127.0.0.1:{port}')\")\n"
        "threading.Thread(target=listen, name='nixl_handshake_listener').start()\n"
        "time.sleep(60)\n"
    )
    plan = LaunchPlan(name="hangs", argv=[sys.executable, "-c", code], env={}, url=f"http://127.0.0.1:{port}")
    started: list = []
    t0 = time.monotonic()
    with _listener(port):
        try:
            with pytest.raises(PortTakenError) as err:
                start_all([plan], LOG_DIR, timeout_s=60, started=started, check_ports=False)
            assert started[0].exited() is None, "the server must still be running: only the log tells"
        finally:
            stop_all(started)
    assert time.monotonic() - t0 < 15, "a taken port must be detected from the log, not the deadline"
    assert err.value.port == port and err.value.instance_name == "hangs"
    assert not started[0].pids()


def test_start_up_is_retried_on_fresh_ports():
    spec = with_fresh_ports(load_pair_spec(LAB / "pair.cpu.yaml"))
    taken = spec.prefill.port
    started: list = []

    def plans(s):
        return [_fake_plan("prefill", s.prefill.port), _fake_plan("decode", s.decode.port)]

    with _listener(taken):
        try:
            running = start_with_retries(spec, plans, LOG_DIR, 30, started, retries=2)
            assert running.prefill.port != taken
            assert [i.url for i in started] == [p.url for p in plans(running)]
            for inst in started:
                with urllib.request.urlopen(inst.url + "/health", timeout=5) as resp:
                    assert resp.status == 200
        finally:
            stop_all(started)


def test_retries_are_bounded():
    spec = load_pair_spec(LAB / "pair.cpu.yaml")
    calls = []

    def plans(s):  # every try lands on one taken port
        calls.append(s)
        return [_fake_plan("prefill", held)]

    held = pick_port()
    with _listener(held):
        started: list = []
        with pytest.raises(PortTakenError):
            start_with_retries(spec, plans, LOG_DIR, 30, started, retries=1)
    assert len(calls) == 2 and started == []
    assert issubclass(PortTakenError, StartupError)


def test_churn_is_bounded_and_uses_ephemeral_ports():
    t0 = time.monotonic()
    result = churn(seconds=1.0, hold=50, rate_per_s=200, report_every_s=60)
    assert time.monotonic() - t0 < 5
    assert result["opened"] > 50 and result["held_max"] == 50 and result["distinct_ports"] > 50
    with pytest.raises(ValueError):
        churn(seconds=0, hold=1, rate_per_s=1)


# ------------------------------------------------------------------------------------------ vllm tier


@pytest.fixture(scope="module")
def solution():
    return load_module(LAB / "solution.py")


@pytest.mark.vllm
def test_vllm_on_a_taken_side_channel_port_never_turns_healthy_and_never_exits(solution):
    """What vLLM 0.32 does (base_scheduler.py: the listener thread dies at bind, ready_event.wait()
    has no timeout): the log shows the ZMQError, the server stays up, /health never answers 200."""
    spec = prepare_spec(load_pair_spec(LAB / "pair.cpu.yaml"))
    plan = solution.launch_plans(spec, python=sys.executable)["prefill"]
    holder = _hold_port(spec.prefill.side_channel_port)
    started: list = []
    try:
        t0 = time.monotonic()
        with pytest.raises(PortTakenError) as err:
            start_all([plan], LOG_DIR, timeout_s=STARTUP_S, started=started, check_ports=False)
        detected_s = time.monotonic() - t0
        inst = started[0]
        assert err.value.port == spec.prefill.side_channel_port
        assert "ZMQError" in inst.log_text() and "nixl_handshake_listener" in inst.log_text()
        watch_until = time.monotonic() + 20
        while time.monotonic() < watch_until:
            assert inst.exited() is None, f"vLLM exited (rc {inst.exited()}): the hazard has changed"
            assert not inst.healthy(), "vLLM turned healthy without its side channel: the hazard has changed"
            time.sleep(1)
        print(f"side channel taken: detected after {detected_s:.1f} s; alive, unhealthy 20 s later")
    finally:
        stop_all(started)
        procs.stop_processes([holder])


@pytest.mark.vllm
def test_pair_recovers_when_its_side_channel_port_is_taken(solution):
    """The runner finds the taken port before starting anything (``check_ports_free``) and starts on
    fresh ports: one start-up, not a wasted one plus a retry."""
    spec = prepare_spec(load_pair_spec(LAB / "pair.cpu.yaml"))
    taken = spec.prefill.side_channel_port
    holder = _hold_port(taken)
    try:
        t0 = time.monotonic()
        with run_pair(solution, spec, log_dir=LOG_DIR, startup_timeout_s=STARTUP_S) as pair:
            up_s = time.monotonic() - t0
            assert pair.spec.prefill.side_channel_port != taken
            assert pair.plans["prefill"].env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == str(
                pair.spec.prefill.side_channel_port
            )
            body = {"model": pair.model, "prompt": list(range(100, 164)), "max_tokens": 4, "temperature": 0.0,
                    "ignore_eos": True}  # fmt: skip
            req = urllib.request.Request(pair.proxy.url + "/v1/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(req, timeout=60) as resp:
                assert resp.status == 200 and resp.headers.get("X-PD-Mode") == "disaggregated"
        print(f"pair up on fresh ports {up_s:.1f} s after start (the taken port found before starting)")
    finally:
        procs.stop_processes([holder])

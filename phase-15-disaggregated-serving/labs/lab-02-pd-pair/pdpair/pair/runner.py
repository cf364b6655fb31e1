"""Start real vLLM servers from YOUR launch plans: a P/D pair behind your proxy, or a colocated baseline.

Used by the ``vllm`` tests, ``demo.py --real`` and by you::

    from pdpair.pair.runner import prepare_spec, run_pair
    spec = prepare_spec(load_pair_spec("pair.cpu.yaml"))      # free ports, cores, the NIXL CPU fix
    with run_pair(impl, spec) as pair:                       # impl = your solution/starter module
        pair.proxy.url, pair.prefill.url, pair.decode.url

    python -m pdpair.pair.runner [--spec pair.cpu.yaml] [--impl starter] [--compiled]   # serve until Ctrl-C

What it does, in order (each step has a deadline; nothing is left running):

1. ``prepare_spec``: both sides on 127.0.0.1 with free HTTP and NIXL side-channel ports chosen outside
   the kernel's ephemeral range (``pdpair.pair.procs.pick_port``: no outbound connection can take them); on CPU
   every TP rank gets its cores (``VLLM_CPU_OMP_THREADS_BIND``, one list per rank, ``|``-separated; see
   ``assign_cores``: the spec's binds where they fit this machine, else each side its own half of the
   cores, its ranks round-robin within it, so decode's two ranks share core 1 next to a TP-1 prefill on
   core 0), a plan this machine cannot host stops here (``HostingError``), and
   vLLM's NIXL connector is loaded through ``kv_connector_module_path: pdpair.pair.nixl_cpu`` (the CPU
   fixes, see that module); seeded random weights (``pdpair.pair.weights``, ``--load-format safetensors``) instead of vLLM's
   near-constant dummy weights; the same ``--served-model-name`` on both sides; ``--enforce-eager`` unless
   asked for the compiled (faster, ~3x slower to start) model. Device, dtype and model come from the spec,
   so the same code path serves CUDA.
2. ``run_pair`` calls YOUR ``launch_plans`` and builds YOUR ``PDProxyPolicy`` before anything starts (an
   unfinished task fails at once, not after a minute of start-up), then starts both servers as their
   own process groups (``start_new_session``; pdpair is installed, so vLLM can import
   ``pdpair.pair.nixl_cpu``), waits for ``/health`` with a deadline (a server that dies or times out raises
   with the tail of each server's log), re-pins every thread of each instance to its core (vLLM's NIXL
   worker moves its compute thread to the last core), and puts the proxy in front (``ProxyThread``).
   A port found taken just before starting (``pdpair.pair.procs.check_ports_free``) or in a log stops the
   start-up at once (``PortTakenError``); both servers are stopped and started again on fresh ports
   (``with_fresh_ports``), at most ``PORT_RETRIES`` times.
3. On exit, always: SIGTERM to each process group it created, SIGKILL after a deadline.

``run_colocated`` starts the baseline the same way: your prefill launch plan without
``--kv-transfer-config`` (a plain instance, no connector), plus ``--logprobs-mode raw_logits`` so the
output oracle (``pdpair.evidence.oracle``) can read its logits; that flag changes what a ``logprobs``
request reports, never the sampled tokens. No ``shell=True`` anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdpair import LAB_DIR
from pdpair.pair.procs import (  # noqa: F401  (re-exported: callers import these from pdpair.pair.runner)
    QUIET_ENV,
    STARTUP_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Instance,
    PortTakenError,
    StartupError,
    group_pids,
    pick_port,
    pin_group,
    start_all,
    stop_all,
)
from pdpair.pair.spec import LaunchPlan, ModelShape, PairSpec, ServerSpec, parse_binds, with_side
from pdpair.proxy import ProxyConfig, ProxyThread

DEFAULT_LOG_DIR = LAB_DIR / "out" / "logs"
NIXL_CONNECTORS = ("NixlConnector", "NixlPullConnector", "NixlPushConnector")
CPU_FIX_MODULE = "pdpair.pair.nixl_cpu"
PORT_RETRIES = 3  # fresh ports after a start-up that found one taken (each try costs one start-up)
# A lab limit, not vLLM's: each rank's OpenMP threads spin on their cores, so oversubscribed ranks slow
# each other's start-up (three ranks on two cores served here; a TP-2 instance took ~70 s to start); a
# plan above this is refused at once rather than left to run into the start-up deadline.
MAX_RANKS_PER_CORE = 2.0
# Resident memory of one vLLM 0.32 CPU process here (API server, EngineCore, each TP worker): 0.66-0.69 GB
# measured with ps for the tiny Llama; the KV cache (VLLM_CPU_KVCACHE_SPACE) comes on top, per rank.
PROCESS_GIB = 0.75


class HostingError(RuntimeError):
    """This machine cannot host the plan (cores, memory): raised before anything starts."""


def _ranks(s: ServerSpec) -> int:
    return s.tensor_parallel_size


def _fits(s: ServerSpec, cores: set[int]) -> bool:
    """The side's own ``cpu_cores`` can be used here: one list per rank, every core available."""
    if s.cpu_cores is None:
        return False
    try:
        binds = parse_binds(s.cpu_cores)
    except ValueError:
        return False
    return len(binds) == _ranks(s) and all(b <= cores for b in binds)


def assign_cores(spec: PairSpec, cores: list[int]) -> dict[str, str]:
    """The ``cpu_cores`` (``VLLM_CPU_OMP_THREADS_BIND``) of each CPU side: the spec's own when every CPU
    side's fits ``cores`` (one core list per TP rank, all of them available); otherwise each side gets its
    own share of ``cores`` (prefill the first half, decode the rest; both share them on one core) and its
    ranks one core each, round-robin within that share. Two cores: TP 1 / TP 1 -> ``"0"``, ``"1"``;
    TP 1 / TP 2 -> ``"0"``, ``"1|1"``; TP 2 / TP 1 -> ``"0|0"``, ``"1"``.

    Why sides stay apart when oversubscribed: a vLLM TP worker busy-polls its shared-memory queue for a
    second after every read (``distributed/device_communicators/shm_broadcast.py``, ``SpinCondition``);
    spread over both cores (``"0"`` and ``"1|0"``, three ranks on two cores), decode's ranks starved
    prefill's handshake listener past vLLM's 5 s reply timeout on every run here."""
    sides = [s for s in (spec.prefill, spec.decode) if s.device == "cpu"]
    if all(_fits(s, set(cores)) for s in sides):
        return {s.name: str(s.cpu_cores) for s in sides}
    half = max(1, len(cores) // 2)
    shares = {"prefill": cores[:half], "decode": cores[half:] or cores}
    if len(sides) == 1:
        shares = {sides[0].name: cores}
    return {
        s.name: "|".join(str(shares[s.name][r % len(shares[s.name])]) for r in range(_ranks(s)))
        for s in sides
    }


def _mem_available_gib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_hostable(spec: PairSpec, cores: list[int], mem_gib: float | None = None) -> None:
    """Raise ``HostingError`` naming the limit when this machine cannot host the CPU sides of ``spec``:
    more TP ranks than ``MAX_RANKS_PER_CORE`` per available core, or more memory than is available
    (per instance an API server and an EngineCore, per TP rank above 1 a worker process, each
    ``PROCESS_GIB``, plus each rank's KV cache space)."""
    sides = [s for s in (spec.prefill, spec.decode) if s.device == "cpu"]
    if not sides:
        return
    ranks = sum(_ranks(s) for s in sides)
    plan = " + ".join(f"{s.name} TP {_ranks(s)}" for s in sides)
    if ranks > MAX_RANKS_PER_CORE * len(cores):
        raise HostingError(
            f"{plan} = {ranks} ranks on {len(cores)} core(s) {sorted(cores)}: this runner hosts at most "
            f"{MAX_RANKS_PER_CORE:g} ranks per core (each rank's OpenMP threads spin); use a machine with "
            f">= {math.ceil(ranks / MAX_RANKS_PER_CORE)} cores or smaller TP sizes"
        )
    mem_gib = _mem_available_gib() if mem_gib is None else mem_gib
    need = sum(
        (2 + (_ranks(s) if _ranks(s) > 1 else 0)) * PROCESS_GIB + _ranks(s) * (s.cpu_kvcache_space_gib or 4)
        for s in sides
    )  # fmt: skip  (vLLM's default KV space on CPU is 4 GiB per rank)
    if mem_gib is not None and need > mem_gib:
        raise HostingError(f"{plan} needs about {need:.1f} GiB (processes and KV cache) and {mem_gib:.1f} GiB "
                           "is available: lower cpu_kvcache_space_gib or the TP sizes")  # fmt: skip


def free_port(host: str = "127.0.0.1") -> int:
    """A free port outside the kernel's ephemeral range (``pdpair.pair.procs.pick_port``; kept for callers)."""
    return pick_port(host)


def with_fresh_ports(spec: PairSpec) -> PairSpec:
    """``spec`` with new HTTP and side-channel ports on both sides (hosts kept), from ``pick_port``:
    outside the ephemeral range, free now, all four distinct. ``spec`` is not changed."""
    for side in ("prefill", "decode"):
        s = getattr(spec, side)
        spec = with_side(spec, side, port=pick_port(s.host), side_channel_port=pick_port(s.side_channel_host))
    return spec


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

    weights: ``random`` (seeded safetensors from ``pdpair.pair.weights``), ``dummy`` (vLLM's own), or ``as_is``
    (the spec's model and load format, e.g. real weights on a GPU host). ``model``: another model folder
    for both sides (implies ``as_is`` unless weights says otherwise).
    """
    for side in ("prefill", "decode"):
        s = getattr(spec, side)
        changes: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": pick_port(),
            "side_channel_host": "127.0.0.1",
            "side_channel_port": pick_port(),
        }
        if model is not None:
            changes["model"] = str(Path(model).resolve())
            config = Path(model) / "config.json"
            if config.is_file():  # what find_hazards and the byte counts see of the new model
                changes["shape"] = ModelShape.from_hf_config(
                    {**json.loads(config.read_text()), **s.hf_overrides}
                )
        if weights == "random" and model is None:
            from pdpair.pair.weights import materialize

            changes["model"] = str(materialize(Path(s.model), seed=s.seed))
            changes["load_format"] = "safetensors"
        elif weights == "dummy":
            changes["load_format"] = "dummy"
        elif weights not in ("random", "as_is"):
            raise ValueError(f"weights must be random, dummy or as_is, got {weights!r}")
        if s.device == "cpu":
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
    return bind_cores(spec)


def bind_cores(spec: PairSpec, cores: list[int] | None = None) -> PairSpec:
    """``spec`` with every CPU side's ``cpu_cores`` set for this machine (``assign_cores`` over the cores
    this process may use), after ``check_hostable``. Call it again after changing a TP size."""
    cores = sorted(os.sched_getaffinity(0)) if cores is None else cores
    check_hostable(spec, cores)
    for side, bind in assign_cores(spec, cores).items():
        spec = with_side(spec, side, cpu_cores=bind)
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


# ------------------------------------------------------------------------------------ pair / baseline


@dataclass
class RunningPair:
    spec: PairSpec  # the prepared spec the plans came from
    plans: dict[str, LaunchPlan]
    prefill: Instance
    decode: Instance
    proxy: ProxyThread | None
    model: str  # what clients send as "model"


def start_with_retries(
    spec: PairSpec,
    make_plans: Callable[[PairSpec], list[LaunchPlan]],
    log_dir: Path,
    timeout_s: float,
    started: list[Instance],
    retries: int = PORT_RETRIES,
) -> PairSpec:
    """Start ``make_plans(spec)`` (``start_all``); on ``PortTakenError`` stop them, take fresh ports and
    try again, up to ``retries`` more times. Returns the spec the running servers came from; the running
    instances are in ``started`` (the failed ones already stopped and removed)."""
    for attempt in range(retries + 1):
        try:
            start_all(make_plans(spec), log_dir, timeout_s, started)
            return spec
        except PortTakenError as err:
            stop_all(started)
            started.clear()
            if attempt == retries:
                raise
            print(f"pdpair.pair.runner: {err.instance_name} found port {err.port} taken; new ports "
                  f"(try {attempt + 2} of {retries + 1})", file=sys.stderr, flush=True)  # fmt: skip
            spec = with_fresh_ports(spec)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_pair(
    impl,
    spec: PairSpec,
    *,
    log_dir: Path = DEFAULT_LOG_DIR,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    proxy_config: ProxyConfig | None = None,
    with_proxy: bool = True,
    port_retries: int = PORT_RETRIES,
    wrap_plan: Callable[[LaunchPlan], LaunchPlan] | None = None,
) -> Iterator[RunningPair]:
    """Both servers from ``impl.launch_plans(spec)`` and ``impl.PDProxyPolicy`` in front; always stopped.

    A port found taken during start-up means new ports and YOUR ``launch_plans`` called again (at most
    ``port_retries`` times); the yielded ``spec`` and ``plans`` are those the servers run with.
    ``wrap_plan``: applied to each plan just before it starts (``pdpair.hosts``: prefill's runs inside
    its network namespace); ``plans`` holds the wrapped ones."""
    plans = impl.launch_plans(spec, python=sys.executable)  # the student's task 1, before anything starts
    if with_proxy:  # the student's task 4, before anything starts
        impl.PDProxyPolicy([plans["prefill"].url], [plans["decode"].url])
    instances: list[Instance] = []

    def make_plans(s: PairSpec) -> list[LaunchPlan]:
        nonlocal plans
        plans = impl.launch_plans(s, python=sys.executable)
        if wrap_plan is not None:
            plans = {k: wrap_plan(v) for k, v in plans.items()}
        return [plans["prefill"], plans["decode"]]

    try:
        spec = start_with_retries(spec, make_plans, log_dir, startup_timeout_s, instances, port_retries)
        prefill, decode = instances
        if not with_proxy:
            yield RunningPair(spec, plans, prefill, decode, None, served_name(spec))
            return
        policy = impl.PDProxyPolicy([plans["prefill"].url], [plans["decode"].url])
        cfg = proxy_config or ProxyConfig(prefill_timeout_s=60.0, decode_timeout_s=60.0)
        with ProxyThread(policy, cfg) as proxy:
            yield RunningPair(spec, plans, prefill, decode, proxy, served_name(spec))
    finally:
        stop_all(instances)


@contextlib.contextmanager
def run_colocated(
    impl,
    spec: PairSpec,
    *,
    log_dir: Path = DEFAULT_LOG_DIR,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    port_retries: int = PORT_RETRIES,
    raw_logits: bool = True,
) -> Iterator[Instance]:
    """The colocated baseline: your prefill launch plan without ``--kv-transfer-config`` (and, with
    ``raw_logits``, with ``--logprobs-mode raw_logits``: see the module docstring); always stopped.
    A taken port means new ports, as in ``run_pair``."""
    impl.launch_plans(spec, python=sys.executable)  # an unfinished task 1 fails before anything starts
    instances: list[Instance] = []

    def make_plans(s: PairSpec) -> list[LaunchPlan]:
        plan = without_kv_transfer(impl.launch_plans(s, python=sys.executable)["prefill"])
        if raw_logits and "--logprobs-mode" not in plan.argv:
            plan = dataclasses.replace(plan, argv=[*plan.argv, "--logprobs-mode", "raw_logits"])
        return [plan]

    try:
        start_with_retries(spec, make_plans, log_dir, startup_timeout_s, instances, port_retries)
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
    from pdpair.pair.spec import load_pair_spec
    from pdpair.proxy import load_impl

    parser = argparse.ArgumentParser(prog="python -m pdpair.pair.runner", description="serve a real P/D pair")
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
    try:
        spec = prepare_spec(load_pair_spec(args.spec), enforce_eager=not args.compiled, weights=args.weights)
    except HostingError as err:
        parser.exit(2, f"python -m pdpair.pair.runner: this machine cannot host {args.spec}: {err}\n")
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

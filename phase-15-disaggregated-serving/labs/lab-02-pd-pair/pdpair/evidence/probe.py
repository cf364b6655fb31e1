"""Run one compatibility-matrix row on a real pair and classify what vLLM did (given code).

``run_row(impl, row, references)`` starts a fresh pair (``pdpair.pair.runner``) from ``pair.cpu.yaml`` with
the row's change, sends the fixed probe set, reads decode's NIXL counters and both logs, stops everything
and returns the recorded row (``outcome``, ``oracle``, ``evidence``, ``argv``, ``env``, ``probes``, ``timings``).
``colocated_references(impl, weights)`` gives what a colocated instance returns for every probe: token
ids and the top logits at each position (``pdpair.evidence.oracle.Reference``).

Every output is judged by the output oracle (``pdpair.evidence.oracle``). Where a side runs the lab's CPU
connector module (pull mode), the recorder swaps in ``pdpair.evidence.kv_dump`` (the same connector, plus
dumps of the KV each side held) so part (a), the KV bits, judges each probe too; a probe the oracle cannot
decide from the logits sends the whole row again in float32 (part c).

The probe set: a short (40-token) and a 1500-token token-id prompt, each as JSON and as SSE, each once
straight through YOUR transforms (prefill_request to prefill, decode_request to decode) and once through
YOUR proxy: 8 requests, 8 distinct prompts (a repeated prompt would hit the prefix cache and move no KV).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import random
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from pdpair.evidence import identity, oracle
from pdpair.evidence.matrix import (
    ALIAS_MODEL,
    CPU_YAML,
    LAB_DIR,
    NOISE,
    RANDOM_SEED1_MODEL,
    Row,
    apply_row,
    row_record,
)
from pdpair.load.client import metric_sum, stream_request
from pdpair.pair.runner import (
    CPU_FIX_MODULE,
    HostingError,
    StartupError,
    bind_cores,
    get_text,
    prepare_spec,
    run_colocated,
    run_pair,
    served_name,
    without_kv_transfer,
)
from pdpair.pair.spec import load_pair_spec, with_side
from pdpair.proxy import ProxyConfig

MAX_TOKENS = 12
REQUEST_TIMEOUT_S = 240.0  # a 1500-token prefill on a starved shared core took over 45 s
STARTUP_TIMEOUT_S = 900.0  # a loaded shared 2-core machine took 200-320 s to start a pair
# the proxy waits as long as the probes do (the defaults would turn a slow, loaded prefill into a fallback)
PROXY = ProxyConfig(connect_timeout_s=10.0, prefill_timeout_s=REQUEST_TIMEOUT_S, decode_timeout_s=REQUEST_TIMEOUT_S,
                    header_timeout_s=60.0, idle_timeout_s=REQUEST_TIMEOUT_S, body_timeout_s=60.0,
                    client_stall_timeout_s=60.0)  # fmt: skip
LOG_DIR = LAB_DIR / "out" / "logs" / "matrix"
EXTERNAL = {"source": "external_kv_transfer"}
LOCAL = {"source": "local_compute"}
# (name, prompt tokens, stream, path): path "direct" = the transforms by hand, "proxy" = PDProxyPolicy
PROBES = [(f"{path}-{n}-{'sse' if stream else 'json'}", n, stream, path)
          for path in ("direct", "proxy") for n in (40, 1500) for stream in (False, True)]  # fmt: skip
EVIDENCE = re.compile(
    r"compatib|handshake|not divisible|KV load failure|Address already in use|Traceback|Error|error|"
    r"deprecated|refus|lease|invalid|mismatch|Unsupported|not supported|failed|compatibility check passed",
)


def probe_prompt(name: str, n: int) -> list[int]:
    rng = random.Random(f"matrix-{name}-{n}")
    return [rng.randrange(3, 32000) for _ in range(n)]


def probe_body(prompt: list[int], model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.0,
            "ignore_eos": True, "return_token_ids": True, "stream": stream}  # fmt: skip


def dumped_spec(spec, dump_dir: Path):
    """``spec`` with every side that runs the lab's CPU connector in pull mode on ``kv_dump`` instead
    (the same connector plus the KV dumps part (a) of the oracle reads); other sides unchanged."""
    sides = [side for side in ("prefill", "decode")
             if getattr(spec, side).kv_connector_module_path == CPU_FIX_MODULE
             and getattr(spec, side).connector in ("NixlConnector", "NixlPullConnector")]  # fmt: skip
    return identity.with_dumps(spec, dump_dir, sides) if len(sides) == 2 else spec


# ---------------------------------------------------------------------------------------- HTTP client


async def _post(url: str, body: dict, headers: dict | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as session:
        res = await stream_request(
            session, url, "/v1/completions", body, headers, timeout_s=REQUEST_TIMEOUT_S
        )
    out: dict[str, Any] = {
        "status": res.status,
        "error": res.error,
        "ids": [],
        "seconds": round(time.monotonic() - t0, 3),
    }
    out["mode"] = res.headers.get("X-PD-Mode")
    out["fallback_reason"] = res.headers.get("X-PD-Fallback-Reason")
    if res.body is not None:
        out["body"] = res.body
    ref = oracle.reference_from_answer(res.body if isinstance(res.body, dict) else None, res.events)
    out["ids"] = list(ref.ids)
    if ref.top is not None:
        out["top"] = ref.top
    return out


def post(url: str, body: dict, headers: dict | None = None) -> dict[str, Any]:
    """One request with a hard deadline; a timeout or refused connection is a result, not an exception."""
    try:
        return asyncio.run(asyncio.wait_for(_post(url, body, headers), REQUEST_TIMEOUT_S + 5))
    except TimeoutError:
        return {"status": None, "error": {"message": f"no answer within {REQUEST_TIMEOUT_S} s"}, "ids": []}
    except aiohttp.ClientError as exc:
        return {"status": None, "error": {"message": f"{type(exc).__name__}: {exc}"}, "ids": []}


def counters(url: str) -> dict[str, float]:
    try:
        text = get_text(url + "/metrics")
    except OSError:
        return {}
    return {
        "external_kv_transfer": metric_sum(text, "vllm:prompt_tokens_by_source_total", **EXTERNAL),
        "local_compute": metric_sum(text, "vllm:prompt_tokens_by_source_total", **LOCAL),
        "nixl_xfer_count": metric_sum(text, "vllm:nixl_xfer_time_seconds_count"),
        "nixl_bytes": metric_sum(text, "vllm:nixl_bytes_transferred_sum"),
    }


ENVIRONMENT_FAILURE = re.compile(r"Available memory on node|not healthy within|uct_iface_open\(tcp/pdp")
# vLLM 0.32 waits 5 s for the handshake reply (nixl/base_worker.py, _nixl_handshake:
# sock.setsockopt(zmq.RCVTIMEO, 5000)); a starved machine misses it and the first requests fail
SLOW_HANDSHAKE = re.compile(r"zmq\.error\.Again: Resource temporarily unavailable")


def _logs_of(spec) -> str:
    """The full logs of this row's two servers (the failure report carries only their last lines, and the
    root cause may sit above them); the runner names each log after its server's HTTP port."""
    texts = []
    for side in (spec.prefill, spec.decode):
        for log in LOG_DIR.glob(f"*-{side.port}.log"):
            with contextlib.suppress(OSError):
                texts.append(log.read_text(errors="replace"))
    return "\n".join(texts)


def log_evidence(text: str, limit: int = 6) -> list[str]:
    """The log lines worth quoting (errors, handshake, compatibility), deduplicated, newest last."""
    seen: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if EVIDENCE.search(line) and not NOISE.search(line):
            short = re.sub(r"^\([A-Za-z0-9_]+ pid=\d+\)\s*", "", line)[:300]
            if short not in seen:
                seen.append(short)
    return seen[-limit:]


# -------------------------------------------------------------------------------- references and rows


def runnable_spec(row: Row, weights: str | None = None, enforce_eager: bool = True):
    """pair.cpu.yaml prepared for this machine (free ports, CPU fix, weights), then the row applied."""
    spec = prepare_spec(load_pair_spec(CPU_YAML), weights=weights or row.weights, enforce_eager=enforce_eager)
    return bind_cores(apply_row(spec, row))  # the row may change a TP size: one core list per rank


def shared_overrides(row: Row) -> dict[str, Any]:
    """The ``hf_overrides`` a row gives BOTH sides alike (a different model on both: its colocated
    reference must be that model too), else ``{}``."""
    p, d = (row.sides.get(side, {}).get("hf_overrides", {}) for side in ("prefill", "decode"))
    return dict(p) if p and p == d else {}


def shared_model(row: Row) -> str | None:
    """The model folder a row gives BOTH sides alike (its colocated reference runs it too), else None."""
    p, d = (row.sides.get(side, {}).get("model") for side in ("prefill", "decode"))
    return p if p and p == d else None


def reference_key(row: Row, dtype: str | None = None) -> str:
    """Which colocated references judge a row: its weights, the model (and model overrides) both sides
    share, a dtype."""
    key = row.weights
    if shared_model(row):
        key += f"+model={shared_model(row)}"
    if shared_overrides(row):
        key += "+" + ",".join(f"{k}={v}" for k, v in sorted(shared_overrides(row).items()))
    return f"{key}-{dtype}" if dtype else key


def colocated_references(impl, weights: str, dtype: str | None = None, hf_overrides: dict[str, Any] | None = None,
                         model: str | None = None) -> dict[str, dict]:  # fmt: skip
    """Every probe prompt on a colocated instance (no connector) with these weights (and ``hf_overrides``,
    ``dtype``, a ``model`` folder of this lab given random weights): token ids and the top logits per
    position (``oracle.Reference.as_dict``), by probe name (and ``kill-drill``)."""
    spec = runnable_spec(Row("reference", "colocated"), weights)
    if model:
        spec = _tweak_spec(apply_row(spec, Row("model", "", {"prefill": {"model": model}, "decode": {"model": model}})),
                           Row("model", "", tweak="materialize"))  # fmt: skip
    if dtype:
        spec = with_side(with_side(spec, "prefill", dtype=dtype), "decode", dtype=dtype)
    if hf_overrides:
        spec = apply_row(spec, Row("overrides", "", {"prefill": {"hf_overrides": hf_overrides}}))
    refs = {}
    with run_colocated(impl, spec, log_dir=LOG_DIR, startup_timeout_s=STARTUP_TIMEOUT_S) as inst:
        for name, n in [(name, n) for name, n, _, _ in PROBES] + [("kill-drill", 1500)]:
            res = post(
                inst.url, oracle.with_logits(probe_body(probe_prompt(name, n), served_name(spec), False))
            )
            if res["status"] != 200 or len(res["ids"]) != MAX_TOKENS:
                raise RuntimeError(f"colocated reference failed for {name}: {res}")
            refs[name] = oracle.Reference.of(res["ids"], res.get("top"), spec.prefill.dtype).as_dict()
    return refs


def _tweak_spec(spec, row: Row):
    from pdpair.pair.weights import materialize

    if row.tweak == "alias_model":  # the prefill's weights, symlinked into a folder with another name
        alias = (LAB_DIR / ALIAS_MODEL).resolve()
        alias.mkdir(parents=True, exist_ok=True)
        for f in Path(spec.prefill.model).iterdir():
            link = alias / f.name
            if not link.exists():
                link.symlink_to(f)
        spec = with_side(spec, "decode", model=str(alias))
    elif row.tweak == "random_seed1":
        seed1 = materialize(LAB_DIR / "models" / "tiny-llama", seed=1)
        alias = (LAB_DIR / RANDOM_SEED1_MODEL).resolve()
        if not alias.exists():
            alias.symlink_to(seed1, target_is_directory=True)
        spec = with_side(spec, "decode", model=str(alias))
    elif row.tweak == "materialize":  # this lab's random weights for the model folder each side names
        for side in ("prefill", "decode"):
            s = getattr(spec, side)
            spec = with_side(spec, side, model=str(materialize(Path(s.model), seed=s.seed)))
    return spec


class _TweakedImpl:
    """The student's module, except that launch_plans drops one side's --kv-transfer-config if asked."""

    def __init__(self, impl, drop: str | None):
        self._impl, self._drop = impl, drop

    def __getattr__(self, name):
        return getattr(self._impl, name)

    def launch_plans(self, spec, python=sys.executable):
        plans = self._impl.launch_plans(spec, python=python)
        if self._drop:
            plans[self._drop] = without_kv_transfer(plans[self._drop], name=self._drop)
        return plans


def _judge_probes(probes: list[dict[str, Any]], refs: dict[str, dict], dump_dir: Path | None) -> None:
    """Each 200 probe's oracle verdict (``probe["oracle"]``), with part (a) where its KV was dumped."""
    for p in probes:
        if p["status"] != 200 or p.get("error") or len(p["ids"]) != MAX_TOKENS:
            continue
        kv = None
        if dump_dir is not None and p.get("rid"):
            kv = oracle.kv_check(dump_dir, p["rid"], p["tokens"])
            if kv.equal is None:
                kv = None  # no dump for this one (a fallback prefilled on decode): parts (b), (c) decide
        v = oracle.judge(oracle.Reference.from_dict(refs[p["name"]]), p["ids"], kv=kv)
        p["oracle"] = v.as_dict() | ({"kv_detail": kv.detail} if kv is not None else {})


def _classify(row_out: dict[str, Any], expected_tokens: int) -> str:
    probes = row_out["probes"]
    if any(p["status"] != 200 or p.get("error") or len(p["ids"]) != MAX_TOKENS for p in probes):
        return "fails_at_first_request"
    verdicts = [oracle.Verdict(**{k: v for k, v in p["oracle"].items() if k != "kv_detail"}) for p in probes]
    worst = oracle.worst(verdicts)
    branches = sorted({v.branch for v in verdicts})
    row_out["oracle"] = {"branch": worst.branch, "outcome": worst.outcome, "detail": worst.detail,
                         "probe_branches": branches,
                         "kv_checked": sum(v.kv_equal is not None for v in verdicts)}  # fmt: skip
    if worst.outcome == oracle.CORRUPTION:
        return "corrupt_output_200"
    if worst.outcome == oracle.UNDECIDED:
        return "undecided_200"
    moved = row_out["counters"]["delta"].get("external_kv_transfer", 0)
    fell_back = any(p["path"] == "proxy" and p.get("mode") != "disaggregated" for p in probes)
    if moved < expected_tokens or fell_back:
        return "silently_degraded"
    return "rounding_drift_200" if worst.outcome == oracle.DRIFT else "works"


def run_row(impl, row: Row, refs: dict[str, dict], float32_refs=None) -> dict[str, Any]:
    """Start, probe, classify and stop one row; returns its record (see pdpair.evidence.matrix).
    A row the oracle cannot decide from the logits runs again in float32 (``float32_refs()``: the
    colocated float32 references, computed only when needed)."""
    with contextlib.ExitStack() as stack:
        out = _run_row(impl, row, refs, stack)
    if out.get("outcome") == "undecided_200" and float32_refs is not None:
        with contextlib.ExitStack() as stack:
            again = _run_row(impl, row, float32_refs(), stack, dtype="float32")
        _float32_decides(out, again)
    return out


def _float32_decides(out: dict[str, Any], again: dict[str, Any]) -> None:
    """Part (c): each undecided probe judged again with the float32 run of the same probe."""
    by_name = {p["name"]: p for p in again.get("probes", [])}
    for p in out["probes"]:
        if p.get("oracle", {}).get("outcome") != oracle.UNDECIDED:
            continue
        p32 = by_name.get(p["name"], {})
        v32 = p32.get("oracle")
        if v32 is None:
            continue
        outcome = oracle.DRIFT if v32["outcome"] in oracle.OK else oracle.CORRUPTION
        p["oracle"] = {**p["oracle"], "outcome": outcome, "branch": "float32",
                       "detail": p["oracle"]["detail"] + f"; float32 run: {v32['outcome']} ({v32['detail']})"}  # fmt: skip
    out["float32_run"] = {"outcome": again.get("outcome"), "oracle": again.get("oracle")}
    if out["outcome"] == "undecided_200":
        out["outcome"] = _classify(out, sum(n for _, n, _, _ in PROBES))


def _run_row(impl, row: Row, refs: dict[str, dict], stack: contextlib.ExitStack,
             dtype: str | None = None) -> dict[str, Any]:  # fmt: skip
    out = row_record(row)
    compiled = row.tweak == "compiled:prefill"
    try:
        spec = _tweak_spec(runnable_spec(row, enforce_eager=not compiled), row)
    except HostingError as exc:
        return {**out, "outcome": None, "cannot_run": f"this machine cannot host it: {exc}"}
    if dtype:
        spec = with_side(with_side(spec, "prefill", dtype=dtype), "decode", dtype=dtype)
    dump_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pdpair-matrix-kv-")))
    spec = dumped_spec(spec, dump_dir)
    dumping = spec.decode.kv_connector_module_path == identity.DUMP_MODULE
    if compiled:  # the decode side stays eager
        spec = with_side(spec, "decode", extra_args=[*spec.decode.extra_args, "--enforce-eager"])
    extra: dict[str, Any] = {}
    if row.tweak == "two_hosts":  # pdpair.hosts: prefill in its own network namespace, one veth link
        from pdpair.hosts import on_two_hosts, two_hosts, unavailable

        why = unavailable()
        if why:
            return {**out, "outcome": None, "cannot_run": f"two hosts unavailable here: {why}"}
        hosts = stack.enter_context(two_hosts())
        spec = on_two_hosts(spec, hosts)  # both sides on their link addresses, then the row's mistake:
        spec = with_side(spec, "prefill", side_channel_host=row.sides["prefill"]["side_channel_host"])
        extra["wrap_plan"] = hosts.wrap_plan
    drop = row.tweak.split(":", 1)[1] if row.tweak and row.tweak.startswith("no_connector:") else None
    timpl = _TweakedImpl(impl, drop)
    plans = timpl.launch_plans(spec)
    out["argv"] = {side: plans[side].argv[1:] for side in plans}  # without the python path
    out["env"] = {side: plans[side].env for side in plans}
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    t0 = time.monotonic()
    if "port_retries" in inspect.signature(run_pair).parameters:
        extra["port_retries"] = 0  # no fresh ports on a clash: the clash is the row
    try:
        with run_pair(timpl, spec, log_dir=LOG_DIR, startup_timeout_s=STARTUP_TIMEOUT_S, proxy_config=PROXY,
                      **extra) as pair:  # fmt: skip
            out["timings"] = {"startup_s": {"prefill": round(pair.prefill.startup_s, 1),
                                            "decode": round(pair.decode.startup_s, 1)}}  # fmt: skip
            _probe(timpl, pair, row, out, refs, dump_dir if dumping else None)
            out["evidence"] = [f"decode: {ln}" for ln in log_evidence(pair.decode.log_text())] + [
                f"prefill: {ln}" for ln in log_evidence(pair.prefill.log_text())
            ]
    except StartupError as exc:
        text = str(exc)
        logs = _logs_of(spec)
        if ENVIRONMENT_FAILURE.search(text + "\n" + logs):
            # the shared machine, not the row: say so instead of recording a vLLM outcome
            return {**out, "outcome": None, "cannot_run": "not recorded: the shared machine failed the start-up (memory, "
                    "deadline or a vanishing network device); re-run this row (make matrix MATRIX_ARGS='--only ...')"}  # fmt: skip
        head = text.splitlines()[0]
        out["outcome"] = "refuses_to_start"
        out["evidence"] = [head] + log_evidence(text + "\n" + logs, limit=6)
    out.setdefault("timings", {})["row_s"] = round(time.monotonic() - t0, 1)
    return out


def _probe(impl, pair, row: Row, out: dict[str, Any], refs: dict[str, dict], dump_dir: Path | None) -> None:
    before = counters(pair.decode.url)
    probes = []
    for name, n, stream, path in PROBES:
        body = oracle.with_logits(probe_body(probe_prompt(name, n), pair.model, stream))
        seen = oracle.dumped_requests(dump_dir) if dump_dir is not None else set()
        if path == "proxy":
            res = post(pair.proxy.url, body)
            new = oracle.dumped_requests(dump_dir) - seen if dump_dir is not None else set()
            res["rid"] = next(iter(new)) if len(new) == 1 else None
        else:
            request_id = f"matrix-{uuid.uuid4().hex[:12]}"
            pbody, pheaders = impl.prefill_request(body, request_id)
            answer = post(pair.prefill.url, pbody, pheaders)
            try:
                res = post(pair.decode.url, impl.decode_request(body, answer.get("body") or {}),
                           {"X-Request-Id": request_id})  # fmt: skip
            except ValueError as exc:  # prefill gave no kv_transfer_params
                res = {"status": answer["status"], "error": {"message": f"prefill answer: {exc}"}, "ids": []}
            res["prefill_status"] = answer["status"]
            params = (
                (answer.get("body") or {}).get("kv_transfer_params")
                if isinstance(answer.get("body"), dict)
                else None
            )
            res["rid"] = (params or {}).get("remote_request_id")
        res.pop("body", None)
        probes.append({"name": name, "tokens": n, "stream": stream, "path": path, **res})
        if res["status"] is None:  # a hang: the rest would hang too
            break
    after = counters(pair.decode.url)
    _judge_probes(probes, refs, dump_dir)
    for p in probes:
        p.pop("top", None)  # the logits served the verdict; the record keeps ids and verdict
    out["probes"] = probes
    out["counters"] = {"decode_before": before, "decode_after": after,
                       "delta": {k: after[k] - before.get(k, 0) for k in after}}  # fmt: skip
    expected = sum(n for _, n, _, _ in PROBES)
    out["outcome"] = _classify(out, expected)
    some_ok = any(p["status"] == 200 and len(p["ids"]) == MAX_TOKENS for p in probes)
    if (
        out["outcome"] == "fails_at_first_request"
        and some_ok
        and SLOW_HANDSHAKE.search(pair.decode.log_text())
    ):
        # a handshake that timed out and then worked on a later request: the machine was too slow
        out["slow_handshake"] = ("decode's handshake missed vLLM's 5 s reply timeout (nixl/base_worker.py, "
                                 "_nixl_handshake: zmq RCVTIMEO 5000): the machine, not the row")  # fmt: skip
    if row.tweak == "kill_prefill":
        out["outcome"] = _kill_drill(impl, pair, out, refs["kill-drill"])


def _kill_drill(impl, pair, out: dict[str, Any], ref: dict) -> str:
    """Prefill answers a 1500-token prompt, is SIGKILLed, then decode is asked to load that KV."""
    n = 1500
    prompt = probe_prompt("kill-drill", n)
    body = oracle.with_logits(probe_body(prompt, pair.model, False))
    request_id = f"matrix-{uuid.uuid4().hex[:12]}"
    answer = post(pair.prefill.url, *impl.prefill_request(body, request_id))
    pair.prefill.kill()
    before = counters(pair.decode.url)
    res = post(
        pair.decode.url, impl.decode_request(body, answer.get("body") or {}), {"X-Request-Id": request_id}
    )
    after = counters(pair.decode.url)
    res.pop("body", None)
    res.pop("top", None)
    res["local_compute_delta"] = after.get("local_compute", 0) - before.get("local_compute", 0)
    out["drill"] = {"prefill_status": answer["status"], **res}
    if res["status"] != 200 or res.get("error") or len(res["ids"]) != MAX_TOKENS:
        return "fails_at_first_request"
    v = oracle.judge(oracle.Reference.from_dict(ref), res["ids"])
    out["drill"]["oracle"] = v.as_dict()
    if not v.ok:
        out["oracle"] = {"branch": v.branch, "outcome": v.outcome, "detail": f"kill drill: {v.detail}"}
        return "corrupt_output_200" if v.outcome == oracle.CORRUPTION else "undecided_200"
    return "silently_degraded" if res["local_compute_delta"] > 0 else out["outcome"]


def spec_dict(spec) -> dict[str, Any]:
    return {side: dataclasses.asdict(getattr(spec, side)) for side in ("prefill", "decode")}

"""Run one compatibility-matrix row on a real pair and classify what vLLM did (given code).

``run_row(impl, row, references)`` starts a fresh pair (``pdpair.pair.runner``) from ``pair.cpu.yaml`` with
the row's change, sends the fixed probe set, reads decode's NIXL counters and both logs, stops everything
and returns the recorded row (``outcome``, ``evidence``, ``argv``, ``env``, ``probes``, ``timings``).
``colocated_references(impl, weights)`` gives the token ids a colocated instance returns for every probe.

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
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

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
    StartupError,
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
        if isinstance(res.body, dict) and res.body.get("choices"):
            out["ids"] = list(res.body["choices"][0].get("token_ids") or [])
    for event in res.events:
        for choice in event.get("choices") or []:
            out["ids"] += choice.get("token_ids") or []
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
    return apply_row(spec, row)


def colocated_references(impl, weights: str) -> dict[str, list[int]]:
    """Token ids of every probe prompt on a colocated instance (no connector) with these weights."""
    spec = runnable_spec(Row("reference", "colocated"), weights)
    refs = {}
    with run_colocated(impl, spec, log_dir=LOG_DIR, startup_timeout_s=STARTUP_TIMEOUT_S) as inst:
        for name, n, _, _ in PROBES:
            res = post(inst.url, probe_body(probe_prompt(name, n), served_name(spec), False))
            if res["status"] != 200 or len(res["ids"]) != MAX_TOKENS:
                raise RuntimeError(f"colocated reference failed for {name}: {res}")
            refs[name] = res["ids"]
        res = post(inst.url, probe_body(probe_prompt("kill-drill", 1500), served_name(spec), False))
        refs["kill-drill"] = res["ids"]
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


def _classify(row_out: dict[str, Any], refs: dict[str, list[int]], expected_tokens: int) -> str:
    probes = row_out["probes"]
    if any(p["status"] != 200 or p.get("error") or len(p["ids"]) != MAX_TOKENS for p in probes):
        return "fails_at_first_request"
    if any(p["ids"] != refs[p["name"]] for p in probes):
        return "wrong_output_200"
    moved = row_out["counters"]["delta"].get("external_kv_transfer", 0)
    fell_back = any(p["path"] == "proxy" and p.get("mode") != "disaggregated" for p in probes)
    return "silently_degraded" if moved < expected_tokens or fell_back else "works"


def run_row(impl, row: Row, refs: dict[str, list[int]]) -> dict[str, Any]:
    """Start, probe, classify and stop one row; returns its record (see pdpair.evidence.matrix)."""
    with contextlib.ExitStack() as stack:
        return _run_row(impl, row, refs, stack)


def _run_row(impl, row: Row, refs: dict[str, list[int]], stack: contextlib.ExitStack) -> dict[str, Any]:
    out = row_record(row)
    compiled = row.tweak == "compiled:prefill"
    spec = _tweak_spec(runnable_spec(row, enforce_eager=not compiled), row)
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
            _probe(timpl, pair, row, out, refs)
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


def _probe(impl, pair, row: Row, out: dict[str, Any], refs: dict[str, list[int]]) -> None:
    before = counters(pair.decode.url)
    probes = []
    for name, n, stream, path in PROBES:
        body = probe_body(probe_prompt(name, n), pair.model, stream)
        if path == "proxy":
            res = post(pair.proxy.url, body)
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
        res.pop("body", None)
        probes.append({"name": name, "tokens": n, "stream": stream, "path": path, **res})
        if res["status"] is None:  # a hang: the rest would hang too
            break
    after = counters(pair.decode.url)
    out["probes"] = probes
    out["counters"] = {"decode_before": before, "decode_after": after,
                       "delta": {k: after[k] - before.get(k, 0) for k in after}}  # fmt: skip
    expected = sum(n for _, n, _, _ in PROBES)
    out["outcome"] = _classify(out, refs, expected)
    if row.tweak == "kill_prefill":
        out["outcome"] = _kill_drill(impl, pair, out, refs["kill-drill"])


def _kill_drill(impl, pair, out: dict[str, Any], ref: list[int]) -> str:
    """Prefill answers a 1500-token prompt, is SIGKILLed, then decode is asked to load that KV."""
    n = 1500
    prompt = probe_prompt("kill-drill", n)
    body = probe_body(prompt, pair.model, False)
    request_id = f"matrix-{uuid.uuid4().hex[:12]}"
    answer = post(pair.prefill.url, *impl.prefill_request(body, request_id))
    pair.prefill.kill()
    before = counters(pair.decode.url)
    res = post(
        pair.decode.url, impl.decode_request(body, answer.get("body") or {}), {"X-Request-Id": request_id}
    )
    after = counters(pair.decode.url)
    res.pop("body", None)
    res["local_compute_delta"] = after.get("local_compute", 0) - before.get("local_compute", 0)
    out["drill"] = {"prefill_status": answer["status"], **res}
    if res["status"] != 200 or res.get("error") or len(res["ids"]) != MAX_TOKENS:
        return "fails_at_first_request"
    if res["ids"] != ref:
        return "wrong_output_200"
    return "silently_degraded" if res["local_compute_delta"] > 0 else out["outcome"]


def spec_dict(spec) -> dict[str, Any]:
    return {side: dataclasses.asdict(getattr(spec, side)) for side in ("prefill", "decode")}

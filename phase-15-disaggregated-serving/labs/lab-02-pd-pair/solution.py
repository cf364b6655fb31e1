"""lab-02: a prefill/decode pair, its hazards, the handoff proxy's decisions, the tail metrics, and the
proof that the KV moved.

Six tasks (``pytest -m lab02_taskN`` grades one):

1. ``kv_transfer_config`` / ``launch_plan`` / ``launch_plans``: a resolved pair spec -> the exact argv
   and environment of two vLLM 0.32 OpenAI servers (prefill = ``kv_producer``, decode = ``kv_consumer``).
2. ``find_hazards``: every disagreement between the two sides that breaks the pair (vLLM only notices
   most of them at the first handshake, when both servers already look healthy).
3. ``sanitize_request`` / ``prefill_request`` / ``prefill_answer_problem`` / ``decode_request`` /
   ``release_request``: the bodies of vLLM's P/D handoff, what a client may not set, what makes
   prefill's answer usable, and how prefill's blocks are freed when the client has gone.
4. ``PDProxyPolicy``: the proxy's decisions - upstream choice, the handoff flow, graceful degradation,
   failures after the answer, cancellation. ``pdpair.proxy`` runs it inside a real aiohttp server.
5. ``request_timing`` / ``percentile`` / ``signature``: TTFT and ITL from token arrival times, and the
   before/after signature of disaggregation (the tail, not the mean).
6. ``kv_verdict`` / ``canary``: whether the KV really moved, from decode's own counters, per request
   and as a post-launch canary (a pair that silently prefills twice answers 200 with the right tokens).

Everything vLLM-specific here is checked against vLLM 0.32 (see the README's "vLLM facts").
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pdpair.load.client import parse_metrics
from pdpair.pair.runner import get_text, post_json
from pdpair.pair.spec import VLLM_SERVER_MODULE, Hazard, LaunchPlan, PairSpec, ServerSpec
from pdpair.proxy import ErrorReply, ProxyContext, Relay, UpstreamError

# ================================================================================ task 1: launch plans


def kv_transfer_config(side: ServerSpec) -> dict[str, Any]:
    """The ``--kv-transfer-config`` object for one side (vLLM 0.32 ``KVTransferConfig`` field names).

    Always: ``kv_connector`` (side.connector), ``kv_role`` (side.kv_role), ``kv_buffer_device``,
    ``kv_load_failure_policy``. Only when set (non-empty / not None): ``kv_connector_extra_config``,
    ``kv_connector_module_path``. Then every key of ``side.kv_transfer_extra`` verbatim (that is how a
    0.10-era key such as ``kv_rank`` reaches vLLM - and makes it refuse to start).
    Returns a new dict; ``side`` is not modified.
    """
    # BEGIN SOLUTION lab-02 task 1: build the KVTransferConfig mapping for one side
    cfg: dict[str, Any] = {
        "kv_connector": side.connector,
        "kv_role": side.kv_role,
        "kv_buffer_device": side.kv_buffer_device,
        "kv_load_failure_policy": side.kv_load_failure_policy,
    }
    if side.kv_connector_extra_config:
        cfg["kv_connector_extra_config"] = copy.deepcopy(side.kv_connector_extra_config)
    if side.kv_connector_module_path:
        cfg["kv_connector_module_path"] = side.kv_connector_module_path
    cfg.update(copy.deepcopy(side.kv_transfer_extra))
    return cfg
    # END SOLUTION


def launch_plan(side: ServerSpec, python: str = sys.executable) -> LaunchPlan:
    """How to start one side: ``LaunchPlan(name=side.name, argv=[...], env={...}, url=side.url)``.

    argv (a list, never a shell string), flags in any order, each exactly once, values as strings::

        python -m vllm.entrypoints.openai.api_server
          --model <side.model> --load-format <load_format> [--skip-tokenizer-init]  (only if skip_tokenizer_init)
          --seed <seed> --host <host> --port <port> --dtype <dtype> --kv-cache-dtype <kv_cache_dtype>
          --block-size <block_size> --max-model-len <max_model_len> --tensor-parallel-size <tp>
          [--hf-overrides <json>]  (only if side.hf_overrides)
          --kv-transfer-config <json of kv_transfer_config(side)>
          <side.extra_args...>      (verbatim, at the end)

    env (only what to ADD to os.environ; all values strings):
      VLLM_NIXL_SIDE_CHANNEL_HOST / VLLM_NIXL_SIDE_CHANNEL_PORT  (always),
      device "cpu":  VLLM_CPU_KVCACHE_SPACE (if cpu_kvcache_space_gib is set),
                     VLLM_CPU_OMP_THREADS_BIND (if cpu_cores is set);
      device "cuda": CUDA_VISIBLE_DEVICES (if cuda_devices is set);
      then side.env, which wins over the above.
    """
    # BEGIN SOLUTION lab-02 task 1: turn one ServerSpec into an argv list and an environment
    argv = [python, "-m", VLLM_SERVER_MODULE, "--model", side.model, "--load-format", side.load_format]
    if side.skip_tokenizer_init:
        argv.append("--skip-tokenizer-init")
    argv += [
        "--seed", str(side.seed), "--host", side.host, "--port", str(side.port),
        "--dtype", side.dtype, "--kv-cache-dtype", side.kv_cache_dtype,
        "--block-size", str(side.block_size), "--max-model-len", str(side.max_model_len),
        "--tensor-parallel-size", str(side.tensor_parallel_size),
    ]  # fmt: skip
    if side.hf_overrides:
        argv += ["--hf-overrides", json.dumps(side.hf_overrides)]
    argv += ["--kv-transfer-config", json.dumps(kv_transfer_config(side))]
    argv += list(side.extra_args)
    env = {
        "VLLM_NIXL_SIDE_CHANNEL_HOST": side.side_channel_host,
        "VLLM_NIXL_SIDE_CHANNEL_PORT": str(side.side_channel_port),
    }
    if side.device == "cpu":
        if side.cpu_kvcache_space_gib is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(side.cpu_kvcache_space_gib)
        if side.cpu_cores is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(side.cpu_cores)
    elif side.device == "cuda" and side.cuda_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(side.cuda_devices)
    env.update({str(k): str(v) for k, v in side.env.items()})
    return LaunchPlan(name=side.name, argv=argv, env=env, url=side.url)
    # END SOLUTION


def launch_plans(spec: PairSpec, python: str = sys.executable) -> dict[str, LaunchPlan]:
    """``{"prefill": launch_plan(spec.prefill), "decode": launch_plan(spec.decode)}``."""
    # BEGIN SOLUTION lab-02 task 1: one launch plan per side
    return {"prefill": launch_plan(spec.prefill, python), "decode": launch_plan(spec.decode, python)}
    # END SOLUTION


# ==================================================================================== task 2: hazards

HAZARD_NAMES = (
    "model_mismatch",  # the model STRINGS differ (the same weights in another folder count: the path is hashed)
    "dtype_mismatch",  # --dtype differs once resolved (half = float16, float = float32; "auto" is not judged)
    "kv_cache_dtype_mismatch",  # --kv-cache-dtype strings differ, as written ("auto" != "bfloat16", "fp8" != "fp8_e4m3")
    "num_layers_mismatch",  # shape.num_hidden_layers differs (only when both shapes are known)
    "num_kv_heads_mismatch",  # shape.num_key_value_heads differs
    "head_size_mismatch",  # shape.head_dim differs
    "unhashed_setting_mismatch",  # UNHASHED_FLAGS or a non-geometry hf_overrides entry differs: 200, wrong tokens
    "block_size_mismatch",  # block sizes differ in a way decode cannot load (see find_hazards)
    "tp_not_divisible",  # the larger TP size is not a multiple of the smaller
    "prefill_tp_replicates_kv_heads",  # prefill TP > decode TP and prefill TP > the model's KV heads
    "kv_layout_mismatch",  # the two sides' KV cache layouts differ (VLLM_KV_CACHE_LAYOUT)
    "kv_role_misassigned",  # CUDA: prefill not a KV producer, or decode not a KV consumer
    "connector_mismatch",  # different connector families (NixlConnector == NixlPullConnector)
    "transfer_mode_mismatch",  # same NIXL family, push on one side and pull on the other
    "removed_connector",  # a connector name vLLM 0.32 no longer has (SharedStorageConnector, P2pNcclConnector)
    "side_channel_port_clash",  # one host, a NIXL side-channel port the other side also listens on
    "http_port_clash",  # both sides on one host with the same HTTP port
    "localhost_side_channel_across_hosts",  # sides on different hosts, a side channel left on loopback
    "deprecated_kv_config_keys",  # kv_rank / kv_parallel_size / kv_ip / kv_buffer_size in the config
    "recompute_hides_failures",  # decode's kv_load_failure_policy is "recompute"
    "max_model_len_mismatch",  # max_model_len differs: a prompt that fits one side only fails on the other
)
DEPRECATED_KV_KEYS = ("kv_rank", "kv_parallel_size", "kv_ip", "kv_buffer_size")
REMOVED_CONNECTORS = {"SharedStorageConnector": "ExampleConnector", "P2pNcclConnector": None}
NIXL_MODES = {"NixlConnector": "pull", "NixlPullConnector": "pull", "NixlPushConnector": "push"}
DTYPE_ALIASES = {"half": "float16", "float": "float32"}  # vllm/config/model.py _STR_DTYPE_TO_TORCH_DTYPE
# vLLM flags (in a side's extra_args, as "--flag value" or "--flag=value"; vllm/engine/arg_utils.py) that
# change what the model computes yet are neither in NIXL's compatibility hash nor checked at the handshake
# (nixl/metadata.py compute_nixl_compatibility_hash hashes model, dtype, KV geometry, attention backend,
# cache dtype, ...): a difference is silent. "-q" is vLLM's short form of "--quantization".
UNHASHED_FLAGS = ("--revision", "--code-revision", "--tokenizer", "--tokenizer-revision", "--quantization")
FLAG_ALIASES = {"-q": "--quantization", "-dp": "--data-parallel-size"}
# hf_overrides keys that change the KV geometry: vLLM hashes the geometry they produce (layers, KV heads,
# head size), which the shape comparison judges; any OTHER override that differs is unhashed.
GEOMETRY_OVERRIDES = (
    "num_hidden_layers",
    "num_key_value_heads",
    "num_attention_heads",
    "head_dim",
    "hidden_size",
)
# Receiving-side connector modules that carry the lab's CPU fix for decode blocks larger than prefill's
# (pdpair.pair.nixl_cpu, docs/block-size-bug.md): vLLM 0.32's own CPU receive path loads them wrongly.
CPU_BLOCK_FIX_MODULES = ("pdpair.pair.nixl_cpu",)
CPU_KV_LAYOUTS = ("LBHNC",)  # v1/attention/backends/cpu_attn.py supported_kv_cache_layouts
KV_LAYOUT_ALIASES = {"NHD": "LBNHC", "HND": "LBHNC"}  # vllm/config/cache.py _LAYOUT_COMPAT_ALIASES
NIXL_KV_LAYOUT = "LBHNC"  # nixl/connector.py get_required_kvcache_layout (non-MLA): the default with NIXL
KV_PRODUCERS = ("kv_producer", "kv_both")  # vllm/config/kv_transfer.py KVProducer
KV_CONSUMERS = ("kv_consumer", "kv_both")  # KVConsumer


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _same_host(a: str, b: str) -> bool:
    return a == b or (_is_loopback(a) and _is_loopback(b))


def find_hazards(prefill: ServerSpec, decode: ServerSpec) -> list[Hazard]:
    """Every setting that breaks (or hides a broken) pair, as ``Hazard(name, explanation)``.

    The judges are the compatibility matrix recorded on a real vLLM 0.32 pair (``captures/compat-matrix``:
    a row that works yields no hazard, a row that broke yields the name(s) the matrix gives it) and, for
    what this CPU machine cannot run, vLLM 0.32's source (each rule below names where). Names are from
    ``HAZARD_NAMES`` (see the comment beside each), each at most once, in any order; the explanation is
    one line saying what vLLM would do. A good pair yields ``[]``. The inputs are not modified.

    Comparing the sides:
    - the cache dtype is compared as WRITTEN (vLLM hashes the raw string), the model dtype as RESOLVED
      (``half`` is ``float16``); ``auto`` model dtype is resolved from config.json by vLLM, so not judged;
    - the model is compared as the whole string (two folders with the same name are two models);
    - shapes (layers, KV heads, head size) are compared only when both ``shape`` are known;
    - unhashed settings: each of ``UNHASHED_FLAGS`` (also ``-q``) in ``extra_args``, as ``--flag value``
      or ``--flag=value`` (absent = vLLM's default, so absent vs given differs), and every
      ``hf_overrides`` key outside ``GEOMETRY_OVERRIDES`` (absent vs given differs too);
    - "one host": the two ``host`` values are equal or both loopback (localhost = 127.0.0.1 = ::1).
      A side listens on its HTTP ``port`` and on side-channel ports ``side_channel_port + i`` for each
      data-parallel rank i < its ``--data-parallel-size`` (``-dp``; 1 when absent: vLLM adds the rank,
      nixl/base_scheduler.py). On one host, a side-channel port of one side that the other side also
      listens on (side channel or HTTP) is ``side_channel_port_clash``; equal HTTP ports are
      ``http_port_clash``. On two hosts, a side whose ``side_channel_host`` is loopback is
      ``localhost_side_channel_across_hosts``;
    - ``recompute_hides_failures`` is about DECODE's policy only (prefill never loads KV).

    Rules that depend on the device (``side.device``; decode's for the block rule, it is the side that
    loads):
    - block sizes: equal is fine. Otherwise vLLM's handshake (nixl/base_worker.py
      ``_validate_remote_agent_handshake``, kv_connector/utils.py ``block_size_ratio``) refuses unless
      decode's is a multiple of prefill's, and refuses any difference when prefill TP > decode TP or
      when a CUDA decode uses a host buffer (``kv_buffer_device: cpu``). What it lets through loads
      correctly on CUDA; on a CPU decode it loads wrong KV (HTTP 200, wrong tokens: the matrix's
      32/64 row) unless decode's ``kv_connector_module_path`` is one of ``CPU_BLOCK_FIX_MODULES``;
    - ``prefill_tp_replicates_kv_heads``: prefill TP > decode TP and prefill TP > the model's KV heads
      (each prefill rank holds a replicated head): the handshake's bare ``assert`` refuses it
      (base_worker.py); judged when both shapes are known;
    - KV layout: a side's layout is its ``env["VLLM_KV_CACHE_LAYOUT"]`` (``NHD`` = ``LBNHC``, ``HND`` =
      ``LBHNC``) or, unset, NIXL's ``LBHNC``. Different layouts are refused at the handshake, except a
      ``LBNHC`` decode receiving from a ``LBHNC`` prefill with ``enable_permute_local_kv: true`` in
      decode's ``kv_transfer_extra``. (On CPU, attention supports only ``LBHNC``.)
    - roles: on a CUDA side (async scheduling is vLLM's default there) prefill must be a KV producer
      (``KV_PRODUCERS``) and decode a KV consumer (``KV_CONSUMERS``): vLLM keys ``requires_kv_delivery``
      and ``defer_block_free`` on them (v1/core/sched/scheduler.py). A CPU side is never judged: CPU
      forces async scheduling off (platforms/cpu.py), and the matrix ran swapped roles and kv_both:
      both worked.

    Precedence (what is NOT reported when something else is):
    - a side with a ``removed_connector`` never starts: no connector comparison is made
      (neither ``connector_mismatch`` nor ``transfer_mode_mismatch``);
    - ``tp_not_divisible`` is judged first by vLLM: when it holds, neither
      ``prefill_tp_replicates_kv_heads`` nor the block rule's "prefill TP > decode TP" clause is judged.
    Example: prefill ``kv_cache_dtype: auto``, decode ``bfloat16`` -> ``[Hazard("kv_cache_dtype_mismatch", ...)]``.
    """
    # BEGIN SOLUTION lab-02 task 2: compare the two sides the way vLLM's handshake (and the matrix) did
    found: list[Hazard] = []

    def add(name: str, why: str) -> None:
        if name not in {h.name for h in found}:
            found.append(Hazard(name, why))

    def flags(side: ServerSpec) -> dict[str, str]:
        out: dict[str, str] = {}
        args = list(side.extra_args)
        for i, arg in enumerate(args):
            name, eq, value = arg.partition("=")
            name = FLAG_ALIASES.get(name, name)
            if not name.startswith("-"):
                continue
            if not eq:
                value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else ""
            out[name] = value
        return out

    def layout(side: ServerSpec) -> str:
        value = side.env.get("VLLM_KV_CACHE_LAYOUT") or NIXL_KV_LAYOUT
        return KV_LAYOUT_ALIASES.get(value, value)

    p, d = prefill, decode
    pf, df = flags(p), flags(d)
    hash_msg = "NIXL compatibility hash differs: both servers start healthy, the first handshake fails"
    if p.model != d.model:
        add("model_mismatch", f"{hash_msg} (model {p.model} vs {d.model}: the string is hashed)")
    pd_, dd_ = (DTYPE_ALIASES.get(x.dtype, x.dtype) for x in (p, d))
    if "auto" not in (pd_, dd_) and pd_ != dd_:
        add("dtype_mismatch", f"{hash_msg} (dtype {p.dtype} vs {d.dtype})")
    if p.kv_cache_dtype != d.kv_cache_dtype:
        add("kv_cache_dtype_mismatch", f"{hash_msg} (kv_cache_dtype {p.kv_cache_dtype} vs {d.kv_cache_dtype}, "
            "hashed as written)")  # fmt: skip
    if p.shape is not None and d.shape is not None:
        for field_, name in (
            ("num_hidden_layers", "num_layers_mismatch"),
            ("num_key_value_heads", "num_kv_heads_mismatch"),
            ("head_dim", "head_size_mismatch"),
        ):
            a, b = getattr(p.shape, field_), getattr(d.shape, field_)
            if a != b:
                add(name, f"{hash_msg} ({field_} {a} vs {b})")
    unhashed = [f for f in UNHASHED_FLAGS if pf.get(f) != df.get(f)]
    unhashed += [k for k in sorted(set(p.hf_overrides) | set(d.hf_overrides))
                 if k not in GEOMETRY_OVERRIDES and p.hf_overrides.get(k, ...) != d.hf_overrides.get(k, ...)]  # fmt: skip
    if unhashed:
        add("unhashed_setting_mismatch", f"{unhashed} differ but are neither hashed nor checked: the handshake "
            "passes and decode continues prefill's KV with another model: HTTP 200, wrong tokens")  # fmt: skip
    ptp, dtp = p.tensor_parallel_size, d.tensor_parallel_size
    divisible = max(ptp, dtp) % min(ptp, dtp) == 0
    if not divisible:
        add("tp_not_divisible", f"TP sizes {ptp} and {dtp} do not divide: the handshake rejects the pair")
    elif ptp > dtp and d.shape is not None and ptp > d.shape.num_key_value_heads:
        add("prefill_tp_replicates_kv_heads", f"prefill TP {ptp} > decode TP {dtp} and > the model's "
            f"{d.shape.num_key_value_heads} KV heads: the handshake's bare assert refuses replicated heads")  # fmt: skip
    if p.block_size != d.block_size:
        why = None
        if d.block_size % p.block_size != 0:
            why = "the handshake refuses it (decode's block must be a multiple of prefill's)"
        elif divisible and ptp > dtp:
            why = "the handshake refuses unequal blocks when prefill TP > decode TP"
        elif d.device == "cuda" and d.kv_buffer_device == "cpu":
            why = "the handshake refuses unequal blocks with a host buffer (kv_buffer_device cpu)"
        elif d.device == "cpu" and d.kv_connector_module_path not in CPU_BLOCK_FIX_MODULES:
            why = "vLLM 0.32's CPU receive path regroups the blocks wrongly: HTTP 200, wrong tokens"
        if why:
            add(
                "block_size_mismatch",
                f"block sizes {p.block_size} (prefill) vs {d.block_size} (decode): {why}",
            )
    pl, dl = layout(p), layout(d)
    permuted = pl == "LBHNC" and dl == "LBNHC" and d.kv_transfer_extra.get("enable_permute_local_kv") is True
    if pl != dl and not permuted:
        cpu = [s.name for s, lay in ((p, pl), (d, dl)) if s.device == "cpu" and lay not in CPU_KV_LAYOUTS]
        add("kv_layout_mismatch", f"KV cache layouts {pl} (prefill) vs {dl} (decode): the handshake refuses them"
            + (f"; {cpu} cannot even start (CPU attention supports only LBHNC)" if cpu else ""))  # fmt: skip
    if p.device == "cuda" and p.kv_role not in KV_PRODUCERS:
        add("kv_role_misassigned", f"prefill is {p.kv_role}: without the producer role a preempted prefill can "
            "hand off blocks its preemption freed (requires_kv_delivery)")  # fmt: skip
    if d.device == "cuda" and d.kv_role not in KV_CONSUMERS:
        add("kv_role_misassigned", f"decode is {d.kv_role}: without the consumer role freed blocks are not "
            "deferred under async scheduling and a KV load can race a write (defer_block_free)")  # fmt: skip
    for side in (p, d):
        if side.connector in REMOVED_CONNECTORS:
            new = REMOVED_CONNECTORS[side.connector]
            add("removed_connector", f"{side.name}: connector {side.connector} is gone in vLLM 0.32 "
                f"({'now ' + new if new else 'removed'}): the server refuses to start")  # fmt: skip
    pm, dm = NIXL_MODES.get(p.connector), NIXL_MODES.get(d.connector)
    if any(h.name == "removed_connector" for h in found):
        pass  # that side never starts: nothing to match
    elif (pm is None or dm is None) and p.connector != d.connector:
        add("connector_mismatch", f"connectors {p.connector} vs {d.connector}: the sides cannot talk; "
            "requests fail or silently prefill twice")  # fmt: skip
    elif pm is not None and dm is not None and pm != dm:
        add("transfer_mode_mismatch", f"NIXL {pm} vs {dm} (push/pull is in the compatibility hash): "
            "the first handshake fails")  # fmt: skip
    if _same_host(p.host, d.host):

        def listens(side: ServerSpec, fl: dict[str, str]) -> tuple[set[int], set[int]]:
            dp = fl.get("--data-parallel-size", "1")
            ranks = int(dp) if dp.isdigit() and int(dp) >= 1 else 1
            return {side.side_channel_port + i for i in range(ranks)}, {side.port}

        (psc, phttp), (dsc, dhttp) = listens(p, pf), listens(d, df)
        clash = sorted((psc & (dsc | dhttp)) | (dsc & phttp))
        if clash:
            add("side_channel_port_clash", f"both sides on {p.host} listen on port(s) {clash} (side channel = "
                "VLLM_NIXL_SIDE_CHANNEL_PORT + data-parallel rank): the second bind fails")  # fmt: skip
        if p.port == d.port:
            add("http_port_clash", f"both sides on {p.host} serve HTTP on port {p.port}: both came up on it, "
                "requests reach either process and decode handshakes with itself")  # fmt: skip
    else:
        for side in (p, d):
            if _is_loopback(side.side_channel_host):
                add("localhost_side_channel_across_hosts", f"{side.name} advertises side channel "
                    f"{side.side_channel_host} but the pair spans hosts: the peer cannot reach it, the "
                    "handshake times out")  # fmt: skip
    for side in (p, d):
        old = [k for k in DEPRECATED_KV_KEYS if k in side.kv_transfer_extra]
        if old:
            add("deprecated_kv_config_keys", f"{side.name}: 0.10-era keys {old} are unknown to vLLM 0.32's "
                "KVTransferConfig: start-up fails")  # fmt: skip
    if d.kv_load_failure_policy == "recompute":
        add("recompute_hides_failures", "decode prefills locally when a KV load fails: the client gets HTTP 200 "
            "and right tokens, so only decode's counters show it (nixl_num_failed_transfers, local_compute)")  # fmt: skip
    if p.max_model_len != d.max_model_len:
        add("max_model_len_mismatch", f"max_model_len {p.max_model_len} vs {d.max_model_len}: a prompt that "
            "fits one side only is accepted by one and refused by the other")  # fmt: skip
    return found
    # END SOLUTION


# ============================================================================ task 3: the transforms

PREFILL_KV_TRANSFER_PARAMS = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
# Request fields vLLM 0.32 hands to its connectors, not to the model: the OpenAI protocol models
# (entrypoints/openai/completion/protocol.py, chat_completion/protocol.py) copy them, and any keys of
# the same names in ``vllm_xargs``, into the sampling params' ``extra_args``, where v1/request.py reads
# the request's ``kv_transfer_params`` / ``ec_transfer_params``. Only the proxy may set them.
INTERNAL_FIELDS = ("kv_transfer_params", "ec_transfer_params")
# Why a prefill answer cannot be handed off (the fallback reason; see ``prefill_answer_problem``).
NO_KV_PARAMS = "no_kv_transfer_params"
BAD_KV_PARAMS = "bad_kv_transfer_params"


def sanitize_request(body: dict[str, Any]) -> dict[str, Any]:
    """The client's body as an upstream may see it: a deep copy without ``INTERNAL_FIELDS``.

    A client must never steer NIXL. Sent straight to a vLLM 0.32 decode, a client's
    ``{"kv_transfer_params": {"do_remote_prefill": true}}`` kills decode's engine core (nixl/
    pull_scheduler.py ``update_state_after_alloc``: ``assert num_external_tokens == 0``; the server
    exits), full forged params make decode read another request's KV from any host they name, and a
    falsy one smuggled in ``vllm_xargs`` (``""``, ``0``, ``[]``) kills it too (nixl/base_scheduler.py
    ``on_new_request`` calls ``.get`` on it). So each field in ``INTERNAL_FIELDS`` is dropped whatever
    its value (``{}``, ``None``, ``""``, ``0``, ``false`` included), at the top level and inside a
    ``vllm_xargs`` that is an object (vLLM merges its keys into the same ``extra_args``); a
    ``vllm_xargs`` that is not an object is kept as sent (vLLM refuses it with a 400). Everything else
    is kept as sent. ``body`` is not modified.
    Example: ``{"prompt": "hi", "kv_transfer_params": {...}}`` -> ``{"prompt": "hi"}``.
    """
    # BEGIN SOLUTION lab-02 task 3: deep copy, then drop the fields only the proxy may set
    new = copy.deepcopy(body)
    for key in INTERNAL_FIELDS:
        new.pop(key, None)
    xargs = new.get("vllm_xargs")
    if isinstance(xargs, dict):
        for key in INTERNAL_FIELDS:
            xargs.pop(key, None)
    return new
    # END SOLUTION


def prefill_request(body: dict[str, Any], request_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The prefill hop: returns ``(new_body, headers)``; ``body`` is NOT modified.

    new_body = ``sanitize_request(body)`` with ``max_tokens`` = 1, ``max_completion_tokens`` = 1 (only if
    the client sent it), ``stream`` = False (only a non-streaming answer carries ``kv_transfer_params``),
    ``stream_options`` and ``min_tokens`` removed, and ``kv_transfer_params`` =
    ``PREFILL_KV_TRANSFER_PARAMS`` (a fresh copy: whatever the client sent there is gone).
    headers = ``{"X-Request-Id": request_id}`` (other harmless headers may be added).
    """
    # BEGIN SOLUTION lab-02 task 3: one-token, non-streaming prefill that asks for remote decode
    new = sanitize_request(body)
    new["max_tokens"] = 1
    if "max_completion_tokens" in new:
        new["max_completion_tokens"] = 1
    new["stream"] = False
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    new["kv_transfer_params"] = dict(PREFILL_KV_TRANSFER_PARAMS)
    return new, {"X-Request-Id": request_id}
    # END SOLUTION


def prefill_answer_problem(prefill_response: Any) -> str | None:
    """Why prefill's answer cannot be handed to decode, or None when it can.

    A usable answer is a JSON object whose ``kv_transfer_params`` decode's NIXL connector would pull
    from (vLLM 0.32 nixl/pull_scheduler.py needs ``do_remote_prefill``, non-empty ``remote_block_ids``
    and the remote engine/request/host/port): ``do_remote_prefill`` is ``True`` (the bool);
    ``remote_block_ids`` a non-empty list of block ids (ints) or of lists of ints (one per KV-cache
    group, as vLLM 0.32 sends them) with at least one id; ``remote_engine_id``, ``remote_request_id``
    and ``remote_host`` non-empty strings; ``remote_port`` an int in 1..65535 (bools are not ints).
    Other keys are free. Returns:

    - ``NO_KV_PARAMS`` ("no_kv_transfer_params"): the answer is not an object, or its
      ``kv_transfer_params`` is missing, null or ``{}`` (a prefill without a connector, for instance);
    - ``BAD_KV_PARAMS`` ("bad_kv_transfer_params"): present but unusable, e.g. ``{"do_remote_prefill":
      false}``, the request's own ``PREFILL_KV_TRANSFER_PARAMS`` echoed back, or a field of the wrong
      type (``"remote_port": "5600"``).

    Either way no KV can move: handing off would make decode prefill the prompt a second time, silently.
    """
    # BEGIN SOLUTION lab-02 task 3: only params decode's connector would really pull from are a handoff
    params = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
    if params is None or params == {}:
        return NO_KV_PARAMS
    if not isinstance(params, dict):
        return BAD_KV_PARAMS

    def is_id(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    blocks = params.get("remote_block_ids")
    flat = isinstance(blocks, list) and bool(blocks) and all(is_id(b) for b in blocks)
    grouped = (
        isinstance(blocks, list)
        and bool(blocks)
        and all(isinstance(g, list) and all(is_id(b) for b in g) for g in blocks)
        and any(blocks)
    )
    port = params.get("remote_port")
    usable = (
        params.get("do_remote_prefill") is True
        and (flat or grouped)
        and all(
            isinstance(params.get(k), str) and params[k]
            for k in ("remote_engine_id", "remote_request_id", "remote_host")
        )
        and isinstance(port, int)
        and not isinstance(port, bool)
        and 0 < port < 65536
    )
    return None if usable else BAD_KV_PARAMS
    # END SOLUTION


def decode_request(body: dict[str, Any], prefill_response: dict[str, Any]) -> dict[str, Any]:
    """The decode hop: ``sanitize_request(body)`` (stream, max_tokens... intact) plus a deep copy of the
    ``kv_transfer_params`` object the prefill answer returned, unchanged. ``body`` is not modified.

    Raises ValueError when ``prefill_answer_problem(prefill_response)`` names a problem (a prefill
    server without a connector, for instance): the caller decides what to do then.
    """
    # BEGIN SOLUTION lab-02 task 3: the client's request plus the prefill's kv_transfer_params
    problem = prefill_answer_problem(prefill_response)
    if problem is not None:
        got = prefill_response.get("kv_transfer_params") if isinstance(prefill_response, dict) else None
        raise ValueError(f"{problem}: prefill's answer cannot be handed off (kv_transfer_params {got!r})")
    new = sanitize_request(body)
    new["kv_transfer_params"] = copy.deepcopy(prefill_response["kv_transfer_params"])
    return new
    # END SOLUTION


def release_request(body: dict[str, Any], prefill_response: dict[str, Any]) -> dict[str, Any]:
    """The body that frees prefill's blocks when the client has gone: ``decode_request(body,
    prefill_response)`` made as cheap as possible for decode: ``max_tokens`` = 1,
    ``max_completion_tokens`` = 1 (only if the client sent it), ``stream`` = False, ``stream_options``
    and ``min_tokens`` removed. ``body`` and ``prefill_response`` are not modified; ValueError as in
    ``decode_request``.

    Why: after answering, a vLLM 0.32 prefill holds the prompt's blocks until a decode reads them (its
    notification frees them), until a decode aborts the request before scheduling it (an empty read
    that only notifies: nixl/pull_scheduler.py ``request_finished``), or until the lease expires
    (``kv_lease_duration``, 30 s by default). Prefill has no endpoint to free them; a decode request
    carrying its params is the only way.
    """
    # BEGIN SOLUTION lab-02 task 3: the handoff body, one token, no stream
    new = decode_request(body, prefill_response)
    new["max_tokens"] = 1
    if "max_completion_tokens" in new:
        new["max_completion_tokens"] = 1
    new["stream"] = False
    new.pop("stream_options", None)
    new.pop("min_tokens", None)
    return new
    # END SOLUTION


# ======================================================================= task 4: the proxy's decisions


class PDProxyPolicy:
    """The decisions of a P/D proxy. ``pdpair.proxy.ProxyServer`` calls ``handle`` for every client
    request to ``/v1/completions`` or ``/v1/chat/completions`` (after parsing its JSON).

    - Upstream choice: round-robin over each pool, independently (prefill 0,1,0,1...; decode 0,1,...).
    - Conditional disaggregation (Dynamo's ``max_local_prefill_length``, llm-d's threshold): a prompt of at
      most ``local_prefill_max_tokens`` tokens is prefilled on decode itself - see ``prefill_remotely``.
    - Prefill-queue limit (Dynamo's ``max_prefill_queue_size``): with ``max_prefill_inflight`` set, a
      prompt is also prefilled on decode while that many prefill hops are in flight - see ``prefill_busy``.
    - Degradation: see ``should_fall_back`` and ``handle``.
    """

    def __init__(
        self,
        prefill_urls: Sequence[str],
        decode_urls: Sequence[str],
        local_prefill_max_tokens: int = 0,
        max_prefill_inflight: int | None = None,
    ) -> None:
        """Keep copies of the pools (``prefill_urls`` may be empty: decode alone; the caller's sequences
        are neither modified nor watched afterwards), the local-prefill threshold (0 = every prompt
        goes through prefill) and the prefill-queue limit (None = no limit: today's behaviour).
        ValueError if there is no decode URL, the threshold is not an int >= 0, or the limit is neither
        None nor an int >= 1 (a bool is not an int); the message's wording is free.
        """
        # BEGIN SOLUTION lab-02 task 4: keep both pools, a round-robin cursor for each, and the threshold
        if not decode_urls:
            raise ValueError("a P/D proxy needs at least one decode upstream")
        threshold = local_prefill_max_tokens
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
            raise ValueError(f"local_prefill_max_tokens must be an int >= 0, got {threshold!r}")
        limit = max_prefill_inflight
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise ValueError(f"max_prefill_inflight must be None or an int >= 1, got {limit!r}")
        self.max_prefill_inflight = limit
        self._prefill_inflight = 0  # prefill hops this policy has started and not yet seen end
        self.local_prefill_max_tokens = local_prefill_max_tokens
        self.prefill_urls = list(prefill_urls)
        self.decode_urls = list(decode_urls)
        self._next_prefill = 0
        self._next_decode = 0
        self._releases: set[asyncio.Task] = set()  # background release hops (referenced until they end)
        # END SOLUTION

    def choose_prefill(self) -> str | None:
        """The next prefill URL, round-robin; None when the pool is empty."""
        # BEGIN SOLUTION lab-02 task 4: round-robin over the prefill pool
        if not self.prefill_urls:
            return None
        url = self.prefill_urls[self._next_prefill % len(self.prefill_urls)]
        self._next_prefill += 1
        return url
        # END SOLUTION

    def choose_decode(self) -> str:
        """The next decode URL, round-robin."""
        # BEGIN SOLUTION lab-02 task 4: round-robin over the decode pool
        url = self.decode_urls[self._next_decode % len(self.decode_urls)]
        self._next_decode += 1
        return url
        # END SOLUTION

    def prefill_busy(self) -> bool:
        """True while the prefill hops in flight (started by ``handle`` on this policy, for any request,
        not yet answered or failed) number ``max_prefill_inflight`` or more; always False without a
        limit. Example: limit 2 -> False with 0 or 1 hop in flight, True with 2.

        Dynamo's conditional rule weighs the same thing: a prompt goes remote only while the prefill
        queue is shorter than ``max_prefill_queue_size`` (an early ai-dynamo/dynamo,
        ``examples/llm/components/disagg_router.py``, ``PyDisaggregatedRouter.prefill_remote``; in 1.6.1
        the router's ``prefill_busy_threshold``, ``dynamo/common/configuration/groups/kv_router_args.py``). A hop
        leaves the count when prefill's answer arrives or the hop fails (error, timeout, cancellation).
        """
        # BEGIN SOLUTION lab-02 task 4: the queue limit counts prefill hops in flight, the limit itself included
        return self.max_prefill_inflight is not None and self._prefill_inflight >= self.max_prefill_inflight
        # END SOLUTION

    def prefill_remotely(self, body: dict) -> bool:
        """True if this request should take the prefill hop; False = decode prefills it locally.

        Local when the threshold is set (> 0) and the prompt is a list of token ids no longer than
        ``local_prefill_max_tokens`` (inclusive; ``[]`` is such a list, of length 0; a list holding
        anything but ints - a bool is not an int - is not, and goes remote like a text prompt): a
        short prompt costs decode one small step, less than the handoff's extra hop and KV pull would add
        to its TTFT. Text prompts and chat messages go remote: the proxy does not tokenize, so it
        cannot know their length in tokens (a router with a tokenizer would count them).
        Also local, whatever the prompt, while ``prefill_busy()``: waiting behind a full prefill queue
        would cost the prompt more than decode prefilling it now (this method says so itself: False
        while busy, not only ``handle``).
        """
        # BEGIN SOLUTION lab-02 task 4: short token-id prompts stay on decode; everything else is handed off
        prompt = body.get("prompt")
        is_token_ids = isinstance(prompt, list) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt
        )
        short = (
            0 < self.local_prefill_max_tokens
            and is_token_ids
            and len(prompt) <= self.local_prefill_max_tokens
        )
        return not short and not self.prefill_busy()
        # END SOLUTION

    def should_fall_back(self, error: UpstreamError) -> bool:
        """After a failed prefill hop: True = serve the request from decode alone.

        Fall back when prefill is unreachable, timed out, gave a bad answer, or answered 5xx, 408 or 429
        (its problem: decode can prefill locally). Do NOT fall back on other 4xx (the client's problem:
        decode would refuse it too).
        """
        # BEGIN SOLUTION lab-02 task 4: prefill's failures degrade, the client's errors do not
        if error.kind in ("unreachable", "timeout", "bad_response"):
            return True
        status = error.status or 0
        return status >= 500 or status in (408, 429)
        # END SOLUTION

    async def handle(self, ctx: ProxyContext, path: str, body: dict, request_id: str) -> Relay | ErrorReply:
        """Walk one request through the handoff; return what the client gets.

        ``request_id`` is the proxy's upstream id for this request (unique per request; the plumbing
        keeps the client's own ``X-Request-Id`` for the response). Every upstream hop carries it as
        ``{"X-Request-Id": request_id}``, in every mode (the release hop of step 5 excepted).
        ``body`` (the client's parsed JSON) is the caller's: ``handle`` never modifies it, whatever
        happens (every upstream body is built from a copy, as task 3's transforms promise).

        0. ``prefill_remotely(body)`` False -> straight to a decode upstream with
           ``sanitize_request(body)``: ``Relay(stream, mode="local", reason=...)``, reason
           ``"prefill_busy"`` when ``prefill_busy()`` (checked first: a short prompt sent while prefill
           is saturated counts as ``prefill_busy``), else ``"short_prompt"``; no prefill is chosen (its
           cursor stays). The plumbing shows the reason to the client (``X-PD-Local-Reason``) and in
           ``pdproxy_local_prefills_total{reason=...}``.
        1. Choose a prefill (none -> fallback, reason "no_prefill") and a decode upstream, both here,
           before any hop: each cursor moves once per request that gets this far, whatever happens next
           (a request whose prefill hop ends in an ``ErrorReply`` has still taken its decode turn). In
           step 0 the decode cursor moves the same way and the prefill cursor stays.
        2. Prefill hop: ``ctx.post_json("prefill", url, path, *prefill_request(body, request_id))``; it
           counts as in flight for ``prefill_busy`` from just before the call until it returns or raises
           ANYTHING, ``asyncio.CancelledError`` included (a client that leaves mid-prefill must not
           leave prefill "busy" for ever). On ``UpstreamError``: ``should_fall_back`` -> fallback with
           reason = ``error.kind``; otherwise ``ErrorReply(error.status, error.body)``: prefill's own
           status (a 404 stays a 404) and body (an OpenAI-style error object of yours when body is None). An answer ``prefill_answer_problem`` finds a
           problem with -> fallback, reason = that problem: never reported as a handoff.
        3. Decode hop with the SAME ``X-Request-Id``: ``ctx.open_stream("decode", url, path, b, headers)``
           where b = ``decode_request(body, answer)``, or ``sanitize_request(body)`` when decode serves
           alone (local, fallback): a client's ``kv_transfer_params`` never reaches an upstream.
           - A 4xx answer (a stream ``open_stream`` returns) is the client's error (a prompt longer than
             decode's ``max_model_len``...): relay it as it is, whatever the mode; never rewrite it.
           - ``UpstreamError`` (decode unreachable, timed out, or 5xx) -> ``ErrorReply(503, {"error":
             {"message": ..., "type": "decode_unavailable", "upstream": <decode url>, "kind":
             error.kind}})``, in every mode. Never a 200 and never a second decode hop: after a handoff
             a decode 5xx is usually a failed KV load (policy ``fail``), and serving the prompt again
             from decode alone behind a 200 hides the broken pair (it is what ``recompute`` does:
             task 2's ``recompute_hides_failures``).
        4. Return ``Relay(stream, mode="disaggregated" | "fallback" | "local", reason=..., prefill_url=...)``;
           ``prefill_url``: the prefill chosen in step 1 ("disaggregated", and "fallback" after its hop
           failed or its answer was unusable), None when no prefill was chosen ("local", "no_prefill").
        5. Cancellation after the answer: if ``asyncio.CancelledError`` reaches the decode hop after
           prefill returned a usable answer, the decode request may never have reached decode, and
           prefill then holds the prompt's blocks for its whole lease (``release_request``). Start
           ``ctx.post_json("decode", <the same decode url>, path, release_request(body, answer),
           {"X-Request-Id": request_id + "-release"})`` as a background task that outlives this request
           (keep a reference to it until it ends; its failure is ignored: best effort), then re-raise.
           Its own id: the cancelled hop may still live on decode under ``request_id``. Nothing else
           needs releasing: a prefill hop cancelled before its answer aborts prefill's request, which
           vLLM frees at once (nixl/pull_scheduler.py ``request_finished``).
        """
        # BEGIN SOLUTION lab-02 task 4: prefill, then decode with its kv_transfer_params; degrade gracefully
        headers = {"X-Request-Id": request_id}
        remote = self.prefill_remotely(body)
        prefill_url = self.choose_prefill() if remote else None
        decode_url = self.choose_decode()
        decode_body, mode, reason, answer = None, "disaggregated", None, None
        if not remote:
            mode, reason = "local", "prefill_busy" if self.prefill_busy() else "short_prompt"
        elif prefill_url is None:
            mode, reason = "fallback", "no_prefill"
        else:
            pbody, pheaders = prefill_request(body, request_id)
            try:
                self._prefill_inflight += 1
                try:
                    answer = await ctx.post_json("prefill", prefill_url, path, pbody, pheaders)
                finally:
                    self._prefill_inflight -= 1
            except UpstreamError as err:
                if not self.should_fall_back(err):
                    err_body = err.body if isinstance(err.body, dict) else {
                        "error": {"message": str(err), "type": "prefill_error", "upstream": err.url}}  # fmt: skip
                    return ErrorReply(err.status or 502, err_body)
                mode, reason = "fallback", err.kind
            else:
                problem = prefill_answer_problem(answer)
                if problem is None:
                    decode_body = decode_request(body, answer)
                else:
                    mode, reason = "fallback", problem
        if decode_body is None:
            decode_body = sanitize_request(body)
        try:
            stream = await ctx.open_stream("decode", decode_url, path, decode_body, headers)
        except UpstreamError as err:
            return ErrorReply(503, {"error": {
                "message": f"decode upstream {decode_url} is unavailable ({err.kind}); nothing can serve this request",
                "type": "decode_unavailable", "upstream": decode_url, "kind": err.kind, "code": 503}})  # fmt: skip
        except asyncio.CancelledError:
            if mode == "disaggregated":
                release = release_request(body, answer)
                rheaders = {"X-Request-Id": request_id + "-release"}
                task = asyncio.ensure_future(ctx.post_json("decode", decode_url, path, release, rheaders))
                self._releases.add(task)

                def done(t: asyncio.Task) -> None:
                    self._releases.discard(t)
                    if not t.cancelled():
                        t.exception()  # retrieved: a failed release is ignored (best effort)

                task.add_done_callback(done)
            raise
        return Relay(stream, mode=mode, reason=reason, prefill_url=prefill_url)
        # END SOLUTION


# ============================================================================== task 5: the metrics


@dataclass
class RequestTiming:
    ttft_s: float  # first token's arrival - the request's send time
    itl_s: list[float]  # gaps between consecutive token arrivals (len = tokens - 1)


def request_timing(sent_at: float, arrivals: Sequence[float]) -> RequestTiming:
    """TTFT and ITLs of one request from its send time and its tokens' arrival times (seconds).

    Raises ValueError (with a message saying why) for an empty stream, arrivals that go backwards, or a
    first arrival before ``sent_at``. Equal arrivals (two tokens in one chunk) give a 0 gap.
    """
    # BEGIN SOLUTION lab-02 task 5: TTFT from the send time, ITL between consecutive tokens only
    if len(arrivals) == 0:
        raise ValueError("empty stream: no token arrived, so TTFT and ITL are undefined")
    if arrivals[0] < sent_at:
        raise ValueError(f"first token at {arrivals[0]} arrived before the request was sent at {sent_at}")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    if any(g < 0 for g in gaps):
        raise ValueError("token arrival times must not go backwards")
    return RequestTiming(ttft_s=arrivals[0] - sent_at, itl_s=gaps)
    # END SOLUTION


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: sort ascending, take the value of 1-based rank ceil(p/100 * n)
    (rank 1 when that is 0). Compute the rank exactly (e.g. with ``fractions.Fraction(str(p))``): float
    rounding must not move it. ``values`` (any sequence) is not modified. ValueError if ``values`` is
    empty or p is outside [0, 100]. Example: p99.9 of the values 1..1000 is 999 (rank 999).
    """
    # BEGIN SOLUTION lab-02 task 5: nearest-rank percentile with an exact rank
    if len(values) == 0:
        raise ValueError("percentile of no values is undefined")
    if not 0 <= p <= 100:
        raise ValueError(f"p must be in [0, 100], got {p}")
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(str(p)) * len(ordered) / 100))
    return ordered[rank - 1]
    # END SOLUTION


@dataclass
class Signature:
    ttft_p50_before_s: float
    ttft_p50_after_s: float
    ttft_change_pct: float  # (after - before) / before * 100
    itl_mean_before_s: float
    itl_mean_after_s: float
    itl_p50_before_s: float
    itl_p50_after_s: float
    itl_p50_ratio: float  # after / before
    itl_p99_before_s: float
    itl_p99_after_s: float
    itl_p99_ratio: float  # after / before


def signature(colocated: Sequence[RequestTiming], disaggregated: Sequence[RequestTiming]) -> Signature:
    """Before (colocated) vs after (disaggregated): TTFT p50 and its change in percent; ITL mean, p50 and
    p99 with after/before ratios. ITL percentiles and the mean pool every gap of every request (not
    per-request averages); all percentiles by ``percentile`` (nearest rank). The inputs are not modified.

    Zeros: an ITL percentile of 0 is real (tokens that arrive in one chunk) and valid on either side; an
    ITL ratio with a zero denominator is ``math.inf`` (1.0 if both are zero). A TTFT p50 of 0 after is
    valid (-100 %); a colocated (before) TTFT p50 of 0 raises ValueError: a change in percent of 0 is
    undefined. ValueError too if a side has no requests or no gaps at all.
    """

    # BEGIN SOLUTION lab-02 task 5: pool the gaps, compare p50 and p99 (the mean hides the tail)
    def pooled(runs: Sequence[RequestTiming], label: str) -> tuple[list[float], list[float]]:
        if not runs:
            raise ValueError(f"{label}: no requests")
        gaps = [g for r in runs for g in r.itl_s]
        if not gaps:
            raise ValueError(f"{label}: no inter-token gaps (every request produced a single token)")
        return [r.ttft_s for r in runs], gaps

    def ratio(after: float, before: float) -> float:
        if before == 0:
            return 1.0 if after == 0 else math.inf
        return after / before

    tb, gb = pooled(colocated, "colocated")
    ta, ga = pooled(disaggregated, "disaggregated")
    t50b, t50a = percentile(tb, 50), percentile(ta, 50)
    if t50b == 0:
        raise ValueError("colocated TTFT p50 is 0: a TTFT change in percent of 0 is undefined")
    change = (t50a - t50b) / t50b * 100
    i50b, i50a, i99b, i99a = percentile(gb, 50), percentile(ga, 50), percentile(gb, 99), percentile(ga, 99)
    return Signature(
        ttft_p50_before_s=t50b, ttft_p50_after_s=t50a, ttft_change_pct=change,
        itl_mean_before_s=sum(gb) / len(gb), itl_mean_after_s=sum(ga) / len(ga),
        itl_p50_before_s=i50b, itl_p50_after_s=i50a, itl_p50_ratio=ratio(i50a, i50b),
        itl_p99_before_s=i99b, itl_p99_after_s=i99a, itl_p99_ratio=ratio(i99a, i99b),
    )  # fmt: skip
    # END SOLUTION


# ================================================================== task 6: proof that the KV moved

KV_VERDICTS = ("kv_moved", "no_connector", "kv_load_failed", "prefilled_locally", "inconclusive")
CANARY_PROBLEMS = ("prefill_error", "decode_error")  # besides KV_VERDICTS and prefill_answer_problem's


def kv_verdict(before: str, after: str, prompt_tokens: int) -> str:
    """What decode's OWN counters say about one handed-off request: ``"kv_moved"`` or what went wrong.

    ``before`` / ``after``: decode's ``/metrics`` text (Prometheus exposition format) read just before
    the request was sent and just after its answer ended, nothing else running on decode in between;
    ``prompt_tokens``: the request's prompt length. A 200 and the right tokens prove nothing: a decode
    that prefilled the prompt itself answers the same (the matrix's ``connector_prefill_only`` and
    ``policy_recompute_prefill_killed`` rows), only slower and with prefill's work wasted.

    vLLM 0.32's counters (exported names; a name's value is the sum of all its samples, whatever
    their other labels, e.g. one per engine):
    - ``vllm:prompt_tokens_by_source_total{source=...}``: the prompt's tokens by where their KV came
      from, ``local_compute``, ``local_cache_hit`` (decode's own prefix cache) or
      ``external_kv_transfer``; the split is decided when the request is first scheduled and emitted
      with its first token, so a request that fails before its first token moves none of them;
    - ``vllm:nixl_xfer_time_seconds_count``: NIXL reads that completed (vLLM has no success counter);
    - ``vllm:nixl_num_failed_transfers_total``: failed reads, handshakes and notifications, counted
      under either ``kv_load_failure_policy`` (the worker counts, the scheduler's policy acts later);
    - the ADMISSION counters ``vllm:prompt_tokens_cached_by_source_total{source="p2p"}`` and
      ``vllm:external_prefix_cache_hits_total`` record the load the scheduler planned: they move even
      when the load then fails, so they prove nothing.

    Verdicts, the first that applies wins:
    1. ``"no_connector"``: ``after`` has no ``vllm:nixl_`` series at all (nor had ``before``: a
       connector's series that vanish are the ValueError below): decode runs without a KV connector and
       ignores every ``kv_transfer_params`` (a launch without ``--kv-transfer-config``);
    2. ``"kv_load_failed"``: failed transfers grew (the client got an error, or a 200 under
       ``recompute``);
    3. ``"prefilled_locally"``: ``local_compute`` grew: decode computed prompt tokens itself;
    4. ``"kv_moved"``: ``external_kv_transfer`` grew, it and ``local_cache_hit`` together grew by
       exactly ``prompt_tokens``, and at least one NIXL read completed;
    5. ``"inconclusive"``: the counters do not account for this one request (nothing moved: it never
       reached the engine; more than the prompt moved: another request ran meanwhile).
    ValueError, checked before any verdict, if ``prompt_tokens`` is not an int >= 1 (bools are not
    ints), or if the snapshots do not compare because decode restarted in between: one of the counters
    above (the admission counters included; each ``source`` of a by-source counter on its own) went
    DOWN, or is in ``before`` and missing from ``after`` (a Prometheus counter, once exported, stays
    exported while its process lives). Otherwise a counter absent from a snapshot counts as 0 (absent
    from ``before`` only: it grew from 0; from both: it did not move). Gauges and series you do not
    need are not judged. Example: a 64-token handoff that worked moves
    ``external_kv_transfer`` by 64 and ``nixl_xfer_time_seconds_count`` by 1 -> ``"kv_moved"``.
    """
    # BEGIN SOLUTION lab-02 task 6: read the right counters, mind admission, failures first
    if not isinstance(prompt_tokens, int) or isinstance(prompt_tokens, bool) or prompt_tokens < 1:
        raise ValueError(f"prompt_tokens must be an int >= 1, got {prompt_tokens!r}")
    old, new = parse_metrics(before), parse_metrics(after)

    def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
        found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
        return sum(found) if found else None

    def grew(name: str, **labels: str) -> float:
        a, b = total(old, name, **labels), total(new, name, **labels)
        if a is not None and (b is None or b < a):
            raise ValueError(f"{name} {labels or ''} went from {a} to {b}: decode restarted in between")
        return (b or 0.0) - (a or 0.0)

    source = "vllm:prompt_tokens_by_source_total"
    external = grew(source, source="external_kv_transfer")
    cached = grew(source, source="local_cache_hit")
    local = grew(source, source="local_compute")
    failed = grew("vllm:nixl_num_failed_transfers_total")
    reads = grew("vllm:nixl_xfer_time_seconds_count")
    grew("vllm:prompt_tokens_cached_by_source_total", source="p2p")  # admission: only checked, never proof
    grew("vllm:external_prefix_cache_hits_total")
    if not any(n.startswith("vllm:nixl_") for n, _, _ in new):
        return "no_connector"
    if failed > 0:
        return "kv_load_failed"
    if local > 0:
        return "prefilled_locally"
    if external > 0 and external + cached == prompt_tokens and reads >= 1:
        return "kv_moved"
    return "inconclusive"
    # END SOLUTION


def canary(prefill_url: str, decode_url: str, model: str, prompt: list[int], request_id: str) -> str:
    """A post-launch canary: one handoff by hand on a freshly launched pair, judged by decode's counters.

    Both servers report healthy long before the first handoff proves anything (vLLM checks most
    settings at that first handshake). Send ``prefill_request(body, request_id)`` to
    ``prefill_url + "/v1/completions"``, then ``decode_request(body, answer)`` to decode's (non-
    streaming, the same ``X-Request-Id``), reading ``decode_url + "/metrics"`` just before the decode
    hop and just after it, where ``body = {"model": model, "prompt": prompt, "max_tokens": 2,
    "temperature": 0.0}``. ``prompt``: token ids decode has not seen (a fresh prompt: a cached one
    moves no KV). Use ``pdpair.pair.runner.post_json`` / ``get_text`` (given; they raise ``OSError``
    when a server cannot be reached). Returns, the first that applies:
    - ``"prefill_error"``: prefill cannot be reached or does not answer 200 (decode is not called);
    - ``prefill_answer_problem(answer)`` when it names one (decode is not called);
    - ``"decode_error"``: decode cannot be reached, its counters around the hop do not compare
      (``kv_verdict`` raises ValueError: decode restarted meanwhile), or it answers an error status
      while ``kv_verdict`` finds no failure of its own (``"kv_moved"`` or ``"inconclusive"``);
    - ``kv_verdict(before, after, len(prompt))`` otherwise (``"kv_moved"`` for a healthy pair).
    Nothing is raised for a broken pair: saying how it is broken is the point.
    """
    # BEGIN SOLUTION lab-02 task 6: prefill, decode, and decode's counters around the decode hop
    body = {"model": model, "prompt": list(prompt), "max_tokens": 2, "temperature": 0.0}
    pbody, pheaders = prefill_request(body, request_id)
    try:
        status, answer, _ = post_json(prefill_url + "/v1/completions", pbody, pheaders)
    except OSError:
        return "prefill_error"
    if status != 200:
        return "prefill_error"
    problem = prefill_answer_problem(answer)
    if problem is not None:
        return problem
    try:
        before = get_text(decode_url + "/metrics")
        dstatus, _, _ = post_json(decode_url + "/v1/completions", decode_request(body, answer),
                                  {"X-Request-Id": request_id})  # fmt: skip
        after = get_text(decode_url + "/metrics")
    except OSError:
        return "decode_error"
    try:
        verdict = kv_verdict(before, after, len(prompt))
    except ValueError:  # the counters went down or vanished: another decode process answered
        return "decode_error"
    if dstatus != 200 and verdict in ("kv_moved", "inconclusive"):
        return "decode_error"
    return verdict
    # END SOLUTION

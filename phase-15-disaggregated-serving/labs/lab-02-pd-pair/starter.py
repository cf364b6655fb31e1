# STARTER FILE - your work goes here. Replace each `raise NotImplementedError(...)` with code that
# meets the docstring above it, then grade yourself: see this lab's README ('How to grade').
# (Instructors: generated from solution.py by `make starters`; edit solution.py, not this file.)
"""lab-02: a prefill/decode pair, its hazards, the handoff proxy's decisions, and the tail metrics.

Five tasks (``pytest -m lab02_taskN`` grades one):

1. ``kv_transfer_config`` / ``launch_plan`` / ``launch_plans``: a resolved pair spec -> the exact argv
   and environment of two vLLM 0.32 OpenAI servers (prefill = ``kv_producer``, decode = ``kv_consumer``).
2. ``find_hazards``: every disagreement between the two sides that breaks the pair (vLLM only notices
   most of them at the first handshake, when both servers already look healthy).
3. ``prefill_request`` / ``decode_request``: the two bodies of vLLM's P/D handoff.
4. ``PDProxyPolicy``: the proxy's decisions - upstream choice, the handoff flow, graceful degradation.
   ``pdpair.proxy`` runs it inside a real aiohttp server.
5. ``request_timing`` / ``percentile`` / ``signature``: TTFT and ITL from token arrival times, and the
   before/after signature of disaggregation (the tail, not the mean).

Everything vLLM-specific here is checked against vLLM 0.32 (see the README's "vLLM facts").
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pdpair.proxy import ErrorReply, ProxyContext, Relay, UpstreamError
from pdpair.spec import VLLM_SERVER_MODULE, Hazard, LaunchPlan, PairSpec, ServerSpec

# ================================================================================ task 1: launch plans


def kv_transfer_config(side: ServerSpec) -> dict[str, Any]:
    """The ``--kv-transfer-config`` object for one side (vLLM 0.32 ``KVTransferConfig`` field names).

    Always: ``kv_connector`` (side.connector), ``kv_role`` (side.kv_role), ``kv_buffer_device``,
    ``kv_load_failure_policy``. Only when set (non-empty / not None): ``kv_connector_extra_config``,
    ``kv_connector_module_path``. Then every key of ``side.kv_transfer_extra`` verbatim (that is how a
    0.10-era key such as ``kv_rank`` reaches vLLM - and makes it refuse to start).
    Returns a new dict; ``side`` is not modified.
    """
    raise NotImplementedError("lab-02 task 1: build the KVTransferConfig mapping for one side")


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
    raise NotImplementedError("lab-02 task 1: turn one ServerSpec into an argv list and an environment")


def launch_plans(spec: PairSpec, python: str = sys.executable) -> dict[str, LaunchPlan]:
    """``{"prefill": launch_plan(spec.prefill), "decode": launch_plan(spec.decode)}``."""
    raise NotImplementedError("lab-02 task 1: one launch plan per side")


# ==================================================================================== task 2: hazards

HAZARD_NAMES = (
    "model_mismatch",  # different model folders
    "dtype_mismatch",  # --dtype differs (after aliases: half=float16, float=float32)
    "kv_cache_dtype_mismatch",  # the EFFECTIVE cache dtype differs ("auto" = the model dtype; fp8 = fp8_e4m3)
    "num_layers_mismatch",  # shape.num_hidden_layers differs (only when both shapes are known)
    "num_kv_heads_mismatch",  # shape.num_key_value_heads differs
    "head_size_mismatch",  # shape.head_dim differs
    "block_size_not_multiple",  # decode block size is not a multiple of prefill's
    "tp_not_divisible",  # the larger TP size is not a multiple of the smaller
    "connector_mismatch",  # different connector families (NixlConnector == NixlPullConnector)
    "transfer_mode_mismatch",  # same NIXL family, push on one side and pull on the other
    "removed_connector",  # a connector name vLLM 0.32 no longer has (SharedStorageConnector, P2pNcclConnector)
    "roles_not_complementary",  # prefill cannot produce (not kv_producer/kv_both) or decode cannot consume
    "side_channel_port_clash",  # both sides on one host with the same NIXL side-channel port
    "localhost_side_channel_across_hosts",  # sides on different hosts, a side channel left on loopback
    "deprecated_kv_config_keys",  # kv_rank / kv_parallel_size / kv_ip / kv_buffer_size in the config
    "recompute_hides_failures",  # decode's kv_load_failure_policy is "recompute"
    "dummy_weights_differ",  # load_format dummy with different seeds: different random weights
)
DEPRECATED_KV_KEYS = ("kv_rank", "kv_parallel_size", "kv_ip", "kv_buffer_size")
REMOVED_CONNECTORS = {"SharedStorageConnector": "ExampleConnector", "P2pNcclConnector": None}
NIXL_MODES = {"NixlConnector": "pull", "NixlPullConnector": "pull", "NixlPushConnector": "push"}
DTYPE_ALIASES = {"half": "float16", "fp16": "float16", "float": "float32", "bf16": "bfloat16"}
CACHE_DTYPE_ALIASES = {"fp8": "fp8_e4m3"}


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _same_host(a: str, b: str) -> bool:
    return a == b or (_is_loopback(a) and _is_loopback(b))


def find_hazards(prefill: ServerSpec, decode: ServerSpec) -> list[Hazard]:
    """Every disagreement that breaks (or hides a broken) pair, as ``Hazard(name, explanation)``.

    Names are from ``HAZARD_NAMES`` (see the comment beside each); each name at most once; the
    explanation is one line saying what vLLM would do. A good pair yields ``[]``. Notes:
    - shapes (layers, KV heads, head size) are compared only when both ``shape`` are known;
    - "one host": the two ``host`` values are equal or both loopback; "across hosts" otherwise;
    - the block-size rule is divisibility (prefill 16, decode 32 is fine), not equality.
    """
    raise NotImplementedError("lab-02 task 2: compare the two sides the way vLLM's handshake will")


# ============================================================================ task 3: the transforms

PREFILL_KV_TRANSFER_PARAMS = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}


def prefill_request(body: dict[str, Any], request_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The prefill hop: returns ``(new_body, headers)``; ``body`` is NOT modified (deep copy).

    new_body = the client's body with ``max_tokens`` = 1, ``max_completion_tokens`` = 1 (only if the
    client sent it), ``stream`` = False (only a non-streaming answer carries ``kv_transfer_params``),
    ``stream_options`` and ``min_tokens`` removed, and ``kv_transfer_params`` =
    ``PREFILL_KV_TRANSFER_PARAMS`` (a fresh copy). headers = ``{"X-Request-Id": request_id}``.
    """
    raise NotImplementedError("lab-02 task 3: one-token, non-streaming prefill that asks for remote decode")


def decode_request(body: dict[str, Any], prefill_response: dict[str, Any]) -> dict[str, Any]:
    """The decode hop: the client's ORIGINAL body (deep copy; stream, max_tokens... intact) plus the
    ``kv_transfer_params`` object the prefill answer returned, unchanged.

    Raises ValueError if the prefill answer has no ``kv_transfer_params`` object (a prefill server
    without a connector, for instance): the caller decides what to do then.
    """
    raise NotImplementedError("lab-02 task 3: the original request plus the prefill's kv_transfer_params")


# ======================================================================= task 4: the proxy's decisions


class PDProxyPolicy:
    """The decisions of a P/D proxy. ``pdpair.proxy.ProxyServer`` calls ``handle`` for every client
    request to ``/v1/completions`` or ``/v1/chat/completions`` (after parsing its JSON).

    - Upstream choice: round-robin over each pool, independently (prefill 0,1,0,1...; decode 0,1,...).
    - Conditional disaggregation (Dynamo's ``max_local_prefill_length``, llm-d's threshold): a prompt of at
      most ``local_prefill_max_tokens`` tokens is prefilled on decode itself - see ``prefill_remotely``.
    - Degradation: see ``should_fall_back`` and ``handle``.
    """

    def __init__(
        self, prefill_urls: Sequence[str], decode_urls: Sequence[str], local_prefill_max_tokens: int = 0
    ) -> None:
        """Keep the pools (``prefill_urls`` may be empty: decode alone) and the local-prefill threshold
        (0 = every prompt goes through prefill). ValueError if no decode URL or the threshold is negative.
        """
        raise NotImplementedError("lab-02 task 4: keep both pools, a round-robin cursor for each, and the threshold")

    def choose_prefill(self) -> str | None:
        """The next prefill URL, round-robin; None when the pool is empty."""
        raise NotImplementedError("lab-02 task 4: round-robin over the prefill pool")

    def choose_decode(self) -> str:
        """The next decode URL, round-robin."""
        raise NotImplementedError("lab-02 task 4: round-robin over the decode pool")

    def prefill_remotely(self, body: dict) -> bool:
        """True if this request should take the prefill hop; False = decode prefills it locally.

        Local only when the threshold is set (> 0) and the prompt is a list of token ids no longer than
        ``local_prefill_max_tokens`` (inclusive): a
        short prompt costs decode one small step, less than the handoff's extra hop and KV pull would add
        to its TTFT. Text prompts and chat messages always go remote: the proxy does not tokenize, so it
        cannot know their length in tokens (a router with a tokenizer would count them).
        """
        raise NotImplementedError("lab-02 task 4: short token-id prompts stay on decode; everything else is handed off")

    def should_fall_back(self, error: UpstreamError) -> bool:
        """After a failed prefill hop: True = serve the request from decode alone.

        Fall back when prefill is unreachable, timed out, gave a bad answer, or answered 5xx, 408 or 429
        (its problem: decode can prefill locally). Do NOT fall back on other 4xx (the client's problem:
        decode would refuse it too).
        """
        raise NotImplementedError("lab-02 task 4: prefill's failures degrade, the client's errors do not")

    async def handle(self, ctx: ProxyContext, path: str, body: dict, request_id: str) -> Relay | ErrorReply:
        """Walk one request through the handoff; return what the client gets.

        0. ``prefill_remotely(body)`` False -> straight to a decode upstream with the client's body:
           ``Relay(stream, mode="local", reason="short_prompt")``; no prefill is chosen (its cursor stays).
        1. Choose a prefill (none -> fallback, reason "no_prefill") and a decode upstream.
        2. Prefill hop: ``ctx.post_json("prefill", url, path, *prefill_request(body, request_id))``.
           On ``UpstreamError``: ``should_fall_back`` -> fallback with reason = ``error.kind``; otherwise
           ``ErrorReply(error.status, error.body)`` (or an OpenAI-style error object when body is None).
           An answer without ``kv_transfer_params`` -> fallback, reason "no_kv_transfer_params".
        3. Decode hop with the SAME ``X-Request-Id``: ``ctx.open_stream("decode", url, path, b, headers)``
           where b = ``decode_request(body, answer)``, or the client's original body when falling back.
        4. Return ``Relay(stream, mode="disaggregated" | "fallback" | "local", reason=..., prefill_url=...)``.
           If the decode hop raises ``UpstreamError``: ``ErrorReply(503, {"error": {"message": ...,
           "type": "decode_unavailable", "upstream": <decode url>, "kind": error.kind}})`` - never a 200.
        """
        raise NotImplementedError("lab-02 task 4: prefill, then decode with its kv_transfer_params; degrade gracefully")


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
    raise NotImplementedError("lab-02 task 5: TTFT from the send time, ITL between consecutive tokens only")


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: sort ascending, take the value of 1-based rank ceil(p/100 * n)
    (rank 1 when that is 0). Compute the rank exactly (e.g. with ``fractions.Fraction(str(p))``): float
    rounding must not move it. ValueError if ``values`` is empty or p is outside [0, 100].
    """
    raise NotImplementedError("lab-02 task 5: nearest-rank percentile with an exact rank")


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
    p99 with after/before ratios. ITL percentiles pool every gap of every request (not per-request
    averages); all percentiles by ``percentile`` (nearest rank). ValueError if a side has no requests or
    no gaps at all. A ratio with a zero denominator is ``math.inf`` (1.0 if both are zero).
    """

    raise NotImplementedError("lab-02 task 5: pool the gaps, compare p50 and p99 (the mean hides the tail)")

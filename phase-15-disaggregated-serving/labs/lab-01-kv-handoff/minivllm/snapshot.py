"""RequestSnapshot: what crosses the wire when a request moves, and the geometry that must match.

A snapshot is a request's transferable identity: its tokens, progress, sampling parameters, random
generator state and K/V contents in LOGICAL token order. It carries no physical block ids: those only
mean something inside the engine the request left (the destination has its own free list, maybe its
own block size). Contents survive a move; block identity does not.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import torch

from minivllm.model import ModelConfig
from minivllm.sequence import SamplingParams


class SnapshotError(ValueError):
    """A snapshot that cannot be imported into this engine (wrong geometry, malformed, duplicate id)."""


@dataclass(frozen=True)
class RequestSnapshot:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    output_token_ids: tuple[int, ...]
    num_computed_tokens: int  # positions whose K/V is in ``kv``: every token but the last sampled one
    sampling_params: SamplingParams
    generator_state: torch.Tensor | None  # torch.Generator.get_state() of the request's generator;
    # None for rng="counter": that request has no generator, its seed (in sampling_params) is enough
    kv: (
        torch.Tensor | None
    )  # [num_computed_tokens, num_layers, 2, num_kv_heads, head_dim]: kv[p] = position p
    # (None in a pull's PullParams: the K/V stays in the source's blocks until the reader reads them)
    geometry: str  # geometry_fingerprint() of the engine that exported it
    snapshot_id: str = ""  # new_snapshot_id(): names this one handoff (a lease is keyed by it)
    epoch: int = 0  # the request's epoch when it left: an engine that has seen a later one refuses it

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)


@dataclass(frozen=True)
class PullParams:
    """What the source of a held (pull-mode) handoff gives the reader: vLLM's ``kv_transfer_params``
    (``nixl/pull_scheduler.py: NixlPullConnectorScheduler.request_finished``), where the K/V is named
    by the SOURCE's block ids, to be read in place.

    ``snapshot`` is the request's identity (tokens, progress, sampling params, generator state, epoch,
    geometry, ``snapshot_id`` naming the lease) with ``kv=None``. ``expires_at`` is the LAB's
    addition: vLLM sends a deadline only with the bidirectional turn-2 readback
    (``remote_blocks_expiry_time``), not with a normal pull.
    """

    snapshot: RequestSnapshot
    remote_block_ids: tuple[int, ...]  # the source's blocks holding positions 0..n-1, in logical order
    remote_block_size: int  # the source's block size
    kv_layout: str  # the source's KV layout ("NHD" or "HND", minivllm/kv_cache.py)
    expires_at: float  # the lease's deadline on the SOURCE's clock (later, if a heartbeat extended it)


def new_snapshot_id(request_id: str) -> str:
    """A fresh id for one handoff of ``request_id``: unique even when the same request moves again."""
    return f"{request_id}/{uuid.uuid4().hex[:12]}"


def geometry_fingerprint(config: ModelConfig) -> str:
    """Everything K/V contents depend on: the model (its weights' seed, vocabulary, sizes), the layer
    count, KV heads, head dim and dtype. The block size is deliberately left out: it is a property of
    the cache, not of the contents, and the destination may choose another one."""
    fields = (
        f"vocab={config.vocab_size} hidden={config.hidden_size} layers={config.num_layers} "
        f"heads={config.num_heads} kv_heads={config.num_kv_heads} head_dim={config.head_dim} "
        f"ffn={config.intermediate_size} rope={config.rope_theta} dtype={config.dtype} seed={config.seed}"
    )
    return f"{hashlib.sha256(fields.encode()).hexdigest()[:16]} ({fields})"

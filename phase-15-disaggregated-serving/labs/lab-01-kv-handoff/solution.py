"""Lab 01: move a live request between two engines, and prove nobody can tell.

Four tasks (grade one with `pytest -m lab01_task2`):
1. export_request        capture a running request's transferable identity; free it on the source.
2. import_request        validate, claim blocks all-or-nothing, write the K/V, admit it as running.
3. migrate               export then import; on failure, put the request back on the source.
4. readmit_by_recompute  the other recovery strategy (discard the KV, recompute from tokens), and
   recovery_cost         what each strategy costs, so you can tell when each one wins.

The engine (minivllm) is given. What you need from it:
- ``engine.requests[rid]``: a live Request (``prompt_token_ids``, ``output_token_ids``,
  ``num_computed_tokens``, ``sampling_params``, ``generator``, ``block_table``, ``status``).
- ``engine.detach_request(rid)``: take a request out of the engine; its blocks stay allocated (yours).
- ``engine.block_pool``: ``allocate(n)`` (all-or-nothing, raises OutOfBlocksError), ``free(ids)``.
- ``engine.kv_cache.kv``: [num_blocks, block_size, num_layers, 2, num_kv_heads, head_dim]; also
  ``read_block(id)`` / ``write_block(id, data)``. Logical position p of a request lives at
  ``kv[block_table[p // block_size], p % block_size]``.
- ``engine.admit_running(request)`` / ``engine.enqueue_waiting(request)``: take a request in.
- ``geometry_fingerprint(engine.config)`` and ``RequestSnapshot`` (minivllm/snapshot.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from minivllm import (
    Engine,
    ModelConfig,
    OutOfBlocksError,
    Request,
    RequestSnapshot,
    RequestStatus,
    SnapshotError,
    geometry_fingerprint,
)

__all__ = [
    "OutOfBlocksError",
    "RecoveryCost",
    "SnapshotError",
    "export_request",
    "import_request",
    "migrate",
    "readmit_by_recompute",
    "recovery_cost",
    "validate_snapshot",
]


def export_request(engine: Engine, request_id: str) -> RequestSnapshot:
    """Capture the RUNNING request ``request_id`` as a RequestSnapshot, then take it out of ``engine``
    and free its blocks.

    The snapshot holds: the request id; prompt and output tokens (as tuples); ``num_computed_tokens``;
    the sampling params; ``generator.get_state()``; ``kv`` = the K/V of positions
    0..num_computed_tokens-1 in LOGICAL order, shape [num_computed_tokens, num_layers, 2, num_kv_heads,
    head_dim] (``kv[p]`` is position p), memory of its own (not a view of the cache: the blocks are
    about to be reused);
    and ``geometry_fingerprint(engine.config)``. No physical block ids: they mean nothing elsewhere.

    Afterwards the request is gone from the engine and every block it held is back on the free list
    (the anti-leak invariant: usage returns to what it was before the request was admitted).
    Raises KeyError for an unknown id and ValueError for a request that is not running (a waiting
    request has no KV to ship).
    """
    # BEGIN SOLUTION lab-01 task 1: snapshot tokens, generator state and logical-order K/V; then detach and free
    if request_id not in engine.requests:
        raise KeyError(f"no live request {request_id!r} to export (live: {sorted(engine.requests)})")
    request = engine.requests[request_id]
    if request.status != RequestStatus.RUNNING:
        raise ValueError(f"{request_id} is {request.status.value}: only a running request has KV to ship")
    n = request.num_computed_tokens
    # Gather whole blocks in block-table order (= logical order): one copy. Then cut the unused tail of
    # the last block off the token axis, which is a view of that same copy.
    kv = engine.kv_cache.kv[torch.tensor(request.block_table)].flatten(0, 1)[:n]
    snapshot = RequestSnapshot(
        request_id=request_id,
        prompt_token_ids=tuple(request.prompt_token_ids),
        output_token_ids=tuple(request.output_token_ids),
        num_computed_tokens=n,
        sampling_params=request.sampling_params,
        generator_state=request.generator.get_state(),
        kv=kv,
        geometry=geometry_fingerprint(engine.config),
    )
    engine.detach_request(request_id)
    engine.block_pool.free(request.block_table)
    request.block_table = []
    return snapshot
    # END SOLUTION


def validate_snapshot(engine: Engine, snapshot: RequestSnapshot) -> None:
    """Raise SnapshotError, naming the mismatch, unless ``snapshot`` can continue on ``engine`` as a
    running request (the checks are listed in import_request). Touches nothing."""
    # BEGIN SOLUTION lab-01 task 2: check id, geometry, token counts, kv shape and dtype; raise SnapshotError
    if snapshot.request_id in engine.requests:
        raise SnapshotError(
            f"request {snapshot.request_id!r} is already live on the destination (imported twice?)"
        )
    want_geometry = geometry_fingerprint(engine.config)
    if snapshot.geometry != want_geometry:
        raise SnapshotError(f"geometry mismatch: snapshot {snapshot.geometry} vs destination {want_geometry}")
    c, n = engine.config, snapshot.num_computed_tokens
    if not snapshot.prompt_token_ids or not snapshot.output_token_ids or n != snapshot.num_tokens - 1:
        raise SnapshotError(
            f"a running request has every token but the last sampled one computed: {len(snapshot.prompt_token_ids)} "
            f"prompt + {len(snapshot.output_token_ids)} output tokens, num_computed_tokens={n}"
        )
    want_shape = (n, c.num_layers, 2, c.num_kv_heads, c.head_dim)
    if not isinstance(snapshot.kv, torch.Tensor) or tuple(snapshot.kv.shape) != want_shape:
        got = tuple(snapshot.kv.shape) if isinstance(snapshot.kv, torch.Tensor) else type(snapshot.kv)
        raise SnapshotError(f"kv must be [tokens, layers, 2, kv_heads, head_dim] = {want_shape}, got {got}")
    if snapshot.kv.dtype != c.dtype:
        raise SnapshotError(f"kv dtype {snapshot.kv.dtype} != destination dtype {c.dtype}")
    # END SOLUTION


def import_request(engine: Engine, snapshot: RequestSnapshot) -> None:
    """Continue the snapshot's request on ``engine`` as a RUNNING request whose next step is a decode.

    1. Validate before touching anything (``validate_snapshot``); raise SnapshotError (a ValueError) naming the mismatch for:
       a request id already live here, another geometry (``geometry_fingerprint(engine.config)``),
       token counts that do not fit a running request (num_computed_tokens == tokens - 1, at least one
       output token), a kv tensor not shaped [num_computed_tokens, num_layers, 2, num_kv_heads,
       head_dim], or another dtype.
    2. Claim ceil(num_computed_tokens / engine.block_size) blocks in ONE all-or-nothing allocation; if
       they are not there, let the engine's OutOfBlocksError propagate. Either way a failed import
       leaves the destination exactly as it was (usage, free list, requests, cache contents).
    3. Write the K/V into the new blocks in logical order (the destination's block size may differ
       from the source's), restore the generator state, and ``engine.admit_running`` the request.
    """
    # BEGIN SOLUTION lab-01 task 2: validate, allocate all-or-nothing, write K/V by logical position, admit running
    validate_snapshot(engine, snapshot)
    n, block_size = snapshot.num_computed_tokens, engine.block_size
    block_ids = engine.block_pool.allocate(-(-n // block_size))  # raises OutOfBlocksError, takes nothing
    full, rest = divmod(n, block_size)
    kv = engine.kv_cache.kv
    if full:  # whole blocks in one scatter; the partial last block (if any) separately
        kv[torch.tensor(block_ids[:full])] = snapshot.kv[: full * block_size].view(full, *kv.shape[1:])
    if rest:
        kv[block_ids[full], :rest] = snapshot.kv[full * block_size :]
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    request.generator.set_state(snapshot.generator_state)  # the random stream continues where it left off
    request.block_table = block_ids
    request.num_computed_tokens = n
    engine.admit_running(request)
    # END SOLUTION


def migrate(src: Engine, dst: Engine, request_id: str) -> RequestSnapshot:
    """Move running request ``request_id`` from ``src`` to ``dst`` (export, then import); return the
    snapshot that was shipped. If the import fails for any reason, put the request back on ``src``
    unchanged (same tokens, progress, generator state and K/V contents; block ids may differ) and
    re-raise the import's error. Nothing is lost, nothing leaks.
    """
    # BEGIN SOLUTION lab-01 task 3: export, import, and on failure re-import on the source before re-raising
    snapshot = export_request(src, request_id)
    try:
        import_request(dst, snapshot)
    except Exception:
        import_request(src, snapshot)  # the source just freed these blocks, so this fits
        raise
    return snapshot
    # END SOLUTION


def readmit_by_recompute(engine: Engine, snapshot: RequestSnapshot) -> None:
    """The other recovery strategy: discard ``snapshot.kv`` and queue the request on ``engine`` as
    WAITING with its prompt AND output tokens and its generator state, so the engine's next step
    recomputes the K/V of every token (the prefill is paid again) and then samples the next token
    exactly as if the request had never moved. Allocates nothing itself.

    Raises SnapshotError if the request id is already live on ``engine`` or the geometry fingerprint
    differs (recomputed K/V only reproduce the output on the same model); the engine is then unchanged.
    """
    # BEGIN SOLUTION lab-01 task 4: re-queue prompt + generated tokens with the generator state, no KV
    if snapshot.request_id in engine.requests:
        raise SnapshotError(f"request {snapshot.request_id!r} is already live on this engine")
    if snapshot.geometry != geometry_fingerprint(engine.config):
        raise SnapshotError(
            f"geometry mismatch: snapshot {snapshot.geometry} vs engine {geometry_fingerprint(engine.config)}"
        )
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    request.generator.set_state(snapshot.generator_state)  # the random stream continues where it left off
    engine.enqueue_waiting(request)  # KV discarded: the next step recomputes every token
    # END SOLUTION


@dataclass(frozen=True)
class RecoveryCost:
    ship_bytes: int  # K/V bytes to move
    recompute_tokens: int  # positions whose K/V must be recomputed
    recompute_flops: int  # model FLOPs to recompute them (see recovery_cost)
    ship_s: float  # ship_bytes over the link
    recompute_s: float  # recompute_flops at the given compute rate
    cheaper: str  # "ship" or "recompute" (ties go to "ship": it redoes no work)


def recovery_cost(
    snapshot: RequestSnapshot, config: ModelConfig, link_gbps: float, flops_per_s: float
) -> RecoveryCost:
    """What continuing ``snapshot`` elsewhere costs under each strategy, for a model ``config``.

    - ship: the K/V of ``num_computed_tokens`` positions: tokens x layers x 2 (K and V) x kv_heads x
      head_dim x bytes per element of ``config.dtype``; ``ship_s = ship_bytes * 8 / (link_gbps * 1e9)``.
    - recompute: the same ``num_computed_tokens`` positions through the model. FLOPs, counting 2 per
      multiply-add: per token and layer, the weight matmuls 2 x hidden x (heads + 2 x kv_heads) x head_dim
      (QKV) + 2 x heads x head_dim x hidden (output) + 2 x 3 x hidden x intermediate (gate, up, down);
      plus attention for the token at position p: 4 x heads x head_dim x (p + 1) (QK^T and AV).
      Embedding, norms, RoPE and the LM head are left out (the LM head runs once either way).
      ``recompute_s = recompute_flops / flops_per_s``.
    Raises ValueError for a non-positive link or compute rate.
    """
    # BEGIN SOLUTION lab-01 task 4: bytes to ship vs FLOPs to recompute, and which is faster
    if link_gbps <= 0 or flops_per_s <= 0:
        raise ValueError(f"link_gbps and flops_per_s must be > 0, got {link_gbps}, {flops_per_s}")
    c, n = config, snapshot.num_computed_tokens
    itemsize = torch.empty((), dtype=c.dtype).element_size()
    ship_bytes = n * c.num_layers * 2 * c.num_kv_heads * c.head_dim * itemsize
    q_dim, kv_dim = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    weight_flops = (
        2 * c.hidden_size * (q_dim + 2 * kv_dim)
        + 2 * q_dim * c.hidden_size
        + 6 * c.hidden_size * c.intermediate_size
    )
    attention_flops = 4 * q_dim * n * (n + 1) // 2  # sum over p of 4 * q_dim * (p + 1)
    recompute_flops = c.num_layers * (n * weight_flops + attention_flops)
    ship_s = ship_bytes * 8 / (link_gbps * 1e9)
    recompute_s = recompute_flops / flops_per_s
    return RecoveryCost(
        ship_bytes=ship_bytes,
        recompute_tokens=n,
        recompute_flops=recompute_flops,
        ship_s=ship_s,
        recompute_s=recompute_s,
        cheaper="ship" if ship_s <= recompute_s else "recompute",
    )
    # END SOLUTION

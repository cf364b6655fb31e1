"""Lab 01: move a live request between two engines, and prove nobody can tell.

Eight tasks (grade one with `pytest -m lab01_task2`):
1. export_request        capture a running request's transferable identity; free it on the source.
2. validate_snapshot     refuse what this engine could not run to completion, touching nothing;
   import_request        continue the request here as running, or fail leaving the engine as it was.
3. migrate               export, ship, import; on any failure, put the request back on the source.
4. readmit_by_recompute  the other recovery strategy (discard the KV, recompute from tokens), and
   recovery_cost         what each strategy costs, so you can tell when each one wins.
5. export_held, heartbeat, reap_expired, notify_read_done   (the source)
   start_pull, finish_pull                                   (the reader)
                         the pull handoff as vLLM's NIXL connector does it: the request finishes on
                         the source, whose blocks stay held under a lease that heartbeats extend and
                         expiry ends (freeing them); the reader reads them in place, one-sided, and a
                         read that may have raced expiry is a load failure, never an import.
6. import_prefix_aware   the destination reuses the prefix its cache holds; only the rest is shipped.
7. import_with_load_errors, partial_recovery_cost
                         a transfer that lost some blocks: keep the valid prefix, recompute the rest.
8. counter_sample        per-request randomness with no state to carry: a draw keyed on (seed,
                         position), so a moved request needs nothing but its seed.

The engine (minivllm) is given. What you need from it:
- ``engine.requests[rid]``: a live Request (``prompt_token_ids``, ``output_token_ids``,
  ``num_computed_tokens``, ``sampling_params``, ``generator``, ``block_table``, ``status``).
- ``engine.detach_request(rid)``: take a request out of the engine; its blocks stay allocated (yours).
- ``engine.block_pool``: ``allocate(n)`` (all-or-nothing, raises OutOfBlocksError), ``free(ids)``.
- ``engine.kv_cache.kv``: [num_blocks, block_size, num_layers, 2, num_kv_heads, head_dim]; also
  ``read_block(id)`` / ``write_block(id, data)``. A request's ``block_table`` lists the blocks that
  hold its positions, ``block_size`` positions each (``TinyDecoder.forward_token`` in
  minivllm/model.py shows where a step writes a position's K/V).
- ``engine.admit_running(request)`` / ``engine.enqueue_waiting(request)``: take a request in.
- ``geometry_fingerprint(engine.config)``, ``RequestSnapshot`` and ``new_snapshot_id`` (minivllm/snapshot.py).
- ``request.epoch`` / ``engine.epochs[rid]``: how many times a request has moved, and the latest epoch
  it has been live at on this engine (the engine records it on admission).
- For task 5: ``engine.clock()`` (each engine's own), ``engine.leases`` (minivllm/lease.py: ``open``,
  ``get``, ``active()``, ``late_notifications``), ``LeaseState`` / ``ReadVerdict``, ``PullParams``
  (minivllm/snapshot.py), ``engine.await_remote_kv(request)``, ``engine.kv_layout``,
  ``engine.kv_cache.read_raw(ids)`` / ``write_raw(id, data, slot_offset)``, ``engine.failed``.
- For task 6, an engine built with ``enable_prefix_caching=True``: ``engine.prefix_cache`` (``lookup``,
  ``insert``, ``get``; minivllm/prefix_cache.py with ``full_block_hashes`` / ``hash_block_tokens``) and
  the pool's reference counts (``block_pool.touch(ids)``, ``num_evictable(ids)``, ``ref_count(id)``).
- ``request.generator`` is None for a request sampled with ``SamplingParams(rng="counter")``: it has no
  random state at all (task 8; ``Engine(..., counter_sampler=counter_sample)`` samples it).
- ``apply_temperature_top_k`` and ``gumbel_noise`` (minivllm/sampler.py): for task 8.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from minivllm import (
    Engine,
    LeaseState,
    ModelConfig,
    OutOfBlocksError,
    PullParams,
    ReadVerdict,
    Request,
    RequestSnapshot,
    RequestStatus,
    SnapshotError,
    full_block_hashes,
    geometry_fingerprint,
    new_snapshot_id,
)
from minivllm.sampler import apply_temperature_top_k, gumbel_noise

__all__ = [
    "OutOfBlocksError",
    "PartialRecoveryCost",
    "PrefixImport",
    "RecoveryCost",
    "SnapshotError",
    "counter_sample",
    "export_held",
    "export_request",
    "finish_pull",
    "heartbeat",
    "import_prefix_aware",
    "import_request",
    "import_with_load_errors",
    "migrate",
    "notify_read_done",
    "partial_recovery_cost",
    "readmit_by_recompute",
    "reap_expired",
    "recovery_cost",
    "start_pull",
    "validate_snapshot",
]


def export_request(engine: Engine, request_id: str) -> RequestSnapshot:
    """Capture the RUNNING request ``request_id`` as a RequestSnapshot, then take it out of ``engine``
    and free its blocks.

    The snapshot is everything another engine needs to continue the request, and nothing that means
    something only here. ``RequestSnapshot``'s fields: the request's id; a fresh ``snapshot_id``
    (``new_snapshot_id``); the ``epoch`` it leaves at (an export does not move it on: the import
    does); its prompt and output tokens, as tuples; ``num_computed_tokens``; its sampling params; the
    state of its random stream (None for a request with no generator: ``rng="counter"``, task 8);
    ``geometry_fingerprint(engine.config)``; and ``kv``, the K/V of every position that has K/V, by
    LOGICAL position: ``kv[p]`` is position p, shape [positions, num_layers, 2, num_kv_heads,
    head_dim], in the model's dtype. Physical block ids mean nothing elsewhere: none travel.
    The snapshot is the caller's: nothing the engine or the request does afterwards may change it. A
    freed block is the request's no longer: another request may write into it at once.

    Afterwards the request is gone from the engine and every block it held is back on the free list
    (usage returns to what it was before the request was admitted).
    Raises KeyError for an unknown id and ValueError for a request that is not running (a waiting
    request has no KV to ship); the engine is then unchanged.
    Sanity anchor: exported right after its first step, a request with a 10-token prompt ships the
    K/V of 10 positions.
    """
    # BEGIN SOLUTION lab-01 task 1: capture what another engine needs to continue the request, then give its blocks back
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
        generator_state=None if request.generator is None else request.generator.get_state(),
        kv=kv,
        geometry=geometry_fingerprint(engine.config),
        snapshot_id=new_snapshot_id(request_id),
        epoch=request.epoch,
    )
    engine.detach_request(request_id)
    engine.block_pool.free(request.block_table)
    request.block_table = []
    return snapshot
    # END SOLUTION


def validate_snapshot(engine: Engine, snapshot: RequestSnapshot) -> None:
    """Raise SnapshotError naming the problem unless ``snapshot`` can continue on ``engine`` as a
    running request and run there until it finishes; return None when it can.

    Refused (each one is something the engine's admission or its next steps would trip over):
    - a request id already live on ``engine``;
    - a STALE snapshot, older than the latest epoch this engine has seen the request at
      (``engine.epochs``): the request has moved on since, and importing it would fork or rewind it.
      The latest epoch itself is not stale (the snapshot that just left may come back);
    - another geometry (``geometry_fingerprint(engine.config)``);
    - token counts a running request cannot have: at least one prompt and one output token, and K/V
      for every token but the last sampled one;
    - a finished request (``max_tokens`` output tokens already), or a token id outside the vocabulary;
    - a request that could not run to its end here even alone: at its longest, its K/V would need
      more blocks than the engine has in all;
    - a generator state that does not fit the request's ``rng``: a stateful request needs one a
      ``torch.Generator`` accepts (None is refused: restarting from the seed would replay draws
      already made), a counter request must carry None (it has no generator);
    - ``kv`` that is not a tensor of the shape ``export_request`` promises for this request, is of
      another dtype than the engine's model, or holds NaN or infinity anywhere (one poisoned
      position corrupts every later token).

    Free blocks are NOT checked: "no room right now" is import's OutOfBlocksError, not a bad snapshot.
    Reads only: the engine and the snapshot are unchanged whatever the outcome.
    Sanity anchor: a request with a 9-token prompt and max_tokens=16 is refused by a 5-block engine of
    4-token blocks even if it has only 10 tokens of K/V today.
    """
    # BEGIN SOLUTION lab-01 task 2: refuse anything the engine could not run to completion; touch nothing
    if snapshot.request_id in engine.requests:
        raise SnapshotError(
            f"request {snapshot.request_id!r} is already live on the destination (imported twice?)"
        )
    seen = engine.epochs.get(snapshot.request_id, 0)
    if snapshot.epoch < seen:
        raise SnapshotError(
            f"stale snapshot of {snapshot.request_id!r}: epoch {snapshot.epoch}, but this engine has seen the "
            f"request at epoch {seen} (it moved on since this snapshot was taken)"
        )
    want_geometry = geometry_fingerprint(engine.config)
    if snapshot.geometry != want_geometry:
        raise SnapshotError(f"geometry mismatch: snapshot {snapshot.geometry} vs destination {want_geometry}")
    c, n, params = engine.config, snapshot.num_computed_tokens, snapshot.sampling_params
    prompt, output = snapshot.prompt_token_ids, snapshot.output_token_ids
    if not prompt or not output or n != snapshot.num_tokens - 1:
        raise SnapshotError(
            f"a running request has every token but the last sampled one computed: {len(prompt)} "
            f"prompt + {len(output)} output tokens, num_computed_tokens={n}"
        )
    if len(output) >= params.max_tokens:
        raise SnapshotError(f"the request is finished: {len(output)} of max_tokens={params.max_tokens}")
    bad = [t for t in (*prompt, *output) if not 0 <= t < c.vocab_size]
    if bad:
        raise SnapshotError(f"token ids {bad[:5]} outside the vocabulary [0, {c.vocab_size})")
    peak = -(-(len(prompt) + params.max_tokens - 1) // engine.block_size)
    if peak > engine.num_blocks:
        raise SnapshotError(
            f"the request peaks at {len(prompt) + params.max_tokens - 1} positions = {peak} blocks of "
            f"{engine.block_size}; this engine has {engine.num_blocks} in all"
        )
    rng, state = params.rng, snapshot.generator_state
    if (state is None) != (rng == "counter"):
        raise SnapshotError(
            f"rng={rng!r} with {'no' if state is None else 'a'} generator state: a stateful request must carry its "
            "generator's state (from the seed it would replay draws already made); a counter one has none"
        )
    if state is not None:
        try:
            torch.Generator().set_state(state)  # a scratch generator: touches nothing
        except (RuntimeError, TypeError) as exc:
            raise SnapshotError(f"generator state refused by torch.Generator: {exc}") from None
    want_shape = (n, c.num_layers, 2, c.num_kv_heads, c.head_dim)
    if not isinstance(snapshot.kv, torch.Tensor) or tuple(snapshot.kv.shape) != want_shape:
        got = tuple(snapshot.kv.shape) if isinstance(snapshot.kv, torch.Tensor) else type(snapshot.kv)
        raise SnapshotError(f"kv must be [tokens, layers, 2, kv_heads, head_dim] = {want_shape}, got {got}")
    if snapshot.kv.dtype != c.dtype:
        raise SnapshotError(f"kv dtype {snapshot.kv.dtype} != destination dtype {c.dtype}")
    if not bool(torch.isfinite(snapshot.kv).all()):
        where = sorted({int(p) for p in (~torch.isfinite(snapshot.kv)).nonzero()[:, 0]})
        raise SnapshotError(f"kv holds NaN or infinity at positions {where[:5]}")
    # END SOLUTION


def import_request(engine: Engine, snapshot: RequestSnapshot) -> None:
    """Continue the snapshot's request on ``engine`` as a RUNNING request whose next step is a decode.

    Contract:
    - Only what ``validate_snapshot`` accepts is imported, and validation comes first: a snapshot it
      refuses raises its SnapshotError even when there is no room either (the lab's rule on every
      import path: a bad snapshot is reported as bad, whatever else is wrong).
    - The request costs exactly the blocks it needs to hold its K/V AND to decode its next token
      without allocating (the lab's headroom rule: README), claimed in one all-or-nothing
      allocation; when they are not free, the engine's OutOfBlocksError propagates.
    - The imported request is one move further than the snapshot: ``epoch = snapshot.epoch + 1``.
    - Every position's K/V ends up at that logical position in this engine's own blocks (their size
      may differ from the source's); the random stream continues exactly where the source left it;
      the request comes in through ``engine.admit_running``.
    - A failed import, whatever fails and whenever (validation, allocation, the copy, admission),
      re-raises that error and leaves the destination as it was: the same set of free blocks (their
      order, and what free blocks contain, may differ), the same live requests in the same queues, and
      the same K/V in every block a live request holds. The snapshot is never modified.
    Sanity anchor: after an import the next ``step()`` pushes exactly 1 token of that request through
    the model, and allocates nothing for it.
    """
    # BEGIN SOLUTION lab-01 task 2: continue the request here, billed exactly, or leave the engine as it was
    validate_snapshot(engine, snapshot)
    n, block_size = snapshot.num_computed_tokens, engine.block_size
    # The K/V's blocks plus room for the next token: raises OutOfBlocksError, takes nothing.
    block_ids = engine.block_pool.allocate(-(-(n + 1) // block_size))
    try:
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
        if request.generator is not None:  # a counter-sampled request has none: its seed is enough
            request.generator.set_state(snapshot.generator_state)  # the stream continues where it left off
        request.block_table = block_ids
        request.num_computed_tokens = n
        request.epoch = snapshot.epoch + 1
        engine.admit_running(request)
    except BaseException:
        engine.block_pool.free(block_ids)  # nobody holds them yet: the destination is as it was
        raise
    # END SOLUTION


def migrate(
    src: Engine,
    dst: Engine,
    request_id: str,
    transport: Callable[[RequestSnapshot], RequestSnapshot] | None = None,
) -> RequestSnapshot:
    """Move running request ``request_id`` from ``src`` to ``dst``; return the snapshot ``src`` exported.

    ``transport`` stands for the wire: it is handed the exported snapshot and returns what arrives
    at ``dst`` (None: the snapshot arrives as sent). A wire can raise, be cancelled
    (``asyncio.CancelledError``, a BaseException), deliver something ``dst`` refuses, or write into
    the snapshot it was handed (a serializer working in place, a reused buffer).
    Whatever is raised after the export (by the wire, validation, allocation, admission), the request
    must end up back on ``src`` running, as it left (same tokens, progress, generator state and K/V
    contents, whatever the wire did or delivered; block ids may differ), however full ``src`` is;
    ``dst`` as it was; and the original error re-raised. Nothing is lost, nothing leaks, nothing runs
    twice.
    After a rollback the request is one epoch past the snapshot that failed to land
    (``snapshot.epoch + 1``, on the request and in ``src.epochs``), so that snapshot, delivered to
    ``src`` late or twice, even after the request has finished, is refused instead of running the
    request again; the request's own next move goes through.
    Example: ``migrate(a, b, rid, transport=lambda s: send_over_tcp(s))`` raising ConnectionError
    leaves ``rid`` running on ``a`` and re-raises the ConnectionError.
    """
    # BEGIN SOLUTION lab-01 task 3: move the request; if anything after the export fails, the source gets it back as it left
    held = len(src.requests[request_id].block_table) if request_id in src.requests else 0
    snapshot = export_request(src, request_id)
    # What left, kept apart from the object the wire is handed (a wire may write into it).
    kv = snapshot.kv.clone()
    state = None if snapshot.generator_state is None else snapshot.generator_state.clone()
    try:
        arrived = snapshot if transport is None else transport(snapshot)
        import_request(dst, arrived)
    except BaseException:  # a cancellation too: the request must not be lost
        # Not import_request: its headroom may be one block more than the request held, and the
        # source may have no other free block. The blocks export just freed are free still.
        block_ids = src.block_pool.allocate(held)
        for p in range(snapshot.num_computed_tokens):
            src.kv_cache.kv[block_ids[p // src.block_size], p % src.block_size] = kv[p]
        request = Request(
            request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )
        if request.generator is not None:
            request.generator.set_state(state)
        request.block_table = block_ids
        request.num_computed_tokens = snapshot.num_computed_tokens
        request.epoch = snapshot.epoch + 1  # one move further: the snapshot that failed to land is stale here
        src.admit_running(request)
        raise
    return snapshot
    # END SOLUTION


def readmit_by_recompute(engine: Engine, snapshot: RequestSnapshot) -> None:
    """The other recovery strategy: discard ``snapshot.kv`` and queue the request on ``engine`` as
    WAITING with its prompt AND output tokens and its random stream where it left off, so the engine's
    next step recomputes the K/V of every token (the prefill is paid again) and then samples the next
    token exactly as if the request had never moved. Allocates nothing itself. The request is one move
    further (``snapshot.epoch + 1``), as after an import.

    Refuses with SnapshotError, the engine unchanged, whatever ``validate_snapshot`` would refuse
    except the K/V itself: it is never read, so what it holds (its shape, NaN) is no reason to refuse.
    """
    # BEGIN SOLUTION lab-01 task 4: queue the request to recompute its K/V, refusing what could not continue (its K/V aside)
    c, n = engine.config, snapshot.num_computed_tokens
    placeholder = torch.zeros((max(n, 0), c.num_layers, 2, c.num_kv_heads, c.head_dim), dtype=c.dtype)
    validate_snapshot(engine, dataclasses.replace(snapshot, kv=placeholder))  # everything but the K/V
    request = Request(
        snapshot.request_id,
        list(snapshot.prompt_token_ids),
        snapshot.sampling_params,
        list(snapshot.output_token_ids),
    )
    if request.generator is not None:  # a counter-sampled request has none: its seed is enough
        request.generator.set_state(snapshot.generator_state)  # the stream continues where it left off
    request.epoch = snapshot.epoch + 1
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

    - ship: the bytes of the K/V of the ``num_computed_tokens`` positions, as the model's cache holds
      them (``config``: its shapes and ``config.dtype``); ``ship_s`` is that many bytes over a link of
      ``link_gbps`` gigabits (10**9 bits) per second.
    - recompute: the same positions pushed through the model again, each as ``minivllm/model.py``
      computes it. ``recompute_flops`` counts 2 FLOPs per multiply-add of every matrix product a
      position's layers compute, the weights' and attention's alike, and nothing else: the
      embedding, norms, RoPE, softmax and the LM head are left out (the LM head runs once either way).
      ``recompute_s = recompute_flops / flops_per_s``.
    ``cheaper`` is "ship" when ``ship_s <= recompute_s`` (a tie ships: it redoes no work), else
    "recompute". Raises ValueError for a link or compute rate that is not a positive number (0,
    negative, NaN).
    Sanity anchor: attention aside, recomputing a position costs 2 FLOPs per weight of the layers'
    matrices (the usual rule of thumb, exact here).
    """
    # BEGIN SOLUTION lab-01 task 4: price shipping the K/V against recomputing it
    if not (link_gbps > 0 and flops_per_s > 0):  # also refuses NaN
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


# ------------------------------------------------------------------ task 5: the pull handoff, as vLLM's NIXL connector does it
# The source (prefill, vLLM's P) and the reader (decode, D) keep time by their own clocks. The source
# finishes the request and holds its blocks under a lease; the reader allocates its own blocks, reads the
# source's blocks IN PLACE (a one-sided read: the source cannot refuse it, and does not see it), and
# notifies the source, which then frees them. Expiry frees them too: then nothing resumes anywhere.
def export_held(engine: Engine, request_id: str, lease_s: float = 30.0) -> PullParams:
    """The source's side of a pull-mode handoff: running request ``request_id`` leaves ``engine`` for
    good (vLLM's prefill request finishes here; it never runs here again, and it is NOT recorded in
    ``engine.finished``, which holds the outputs of requests that ran to their end here: this one goes
    on elsewhere), while its blocks stay allocated under a lease until the reader's notification or
    expiry; return the ``PullParams`` a reader needs.

    - The lease (``engine.leases.open``) is named by a fresh ``new_snapshot_id`` and runs ``lease_s``
      seconds of ``engine.clock``: ``deadline = clock() + lease_s``, the ``expires_at`` the reader gets.
    - The held blocks count in usage and belong to nobody else until the lease ends.
    - ``params.snapshot``: the request's identity as ``export_request`` captures it (its ``epoch``, its
      generator state or None), but ``kv=None``: the K/V is read from the blocks, not shipped in the
      params. ``remote_block_ids`` are the source's blocks holding positions 0..num_computed_tokens-1
      in logical order (no more: a block that holds no K/V yet is not the reader's business);
      ``remote_block_size`` and ``kv_layout`` are the source's.
    Raises KeyError for an unknown id, ValueError for a request that is not running or a ``lease_s``
    that is not a positive finite number of seconds (a lease that never ends would hold its blocks
    forever); the engine is then unchanged.
    """
    # BEGIN SOLUTION lab-01 task 5: finish the request here, keep its blocks under a lease, hand out where they are
    if not 0 < lease_s < math.inf:
        raise ValueError(f"lease_s must be a positive, finite number of seconds, got {lease_s}")
    if request_id not in engine.requests:
        raise KeyError(f"no live request {request_id!r} to export (live: {sorted(engine.requests)})")
    if engine.requests[request_id].status != RequestStatus.RUNNING:
        raise ValueError(f"{request_id} is not running: only a running request has KV to ship")
    request = engine.detach_request(request_id)  # finished here; its blocks now belong to the lease
    n, block_size = request.num_computed_tokens, engine.block_size
    snapshot_id = new_snapshot_id(request_id)
    deadline = engine.clock() + lease_s
    engine.leases.open(snapshot_id, request, deadline, lease_s)
    snapshot = RequestSnapshot(
        request_id=request_id,
        prompt_token_ids=tuple(request.prompt_token_ids),
        output_token_ids=tuple(request.output_token_ids),
        num_computed_tokens=n,
        sampling_params=request.sampling_params,
        generator_state=None if request.generator is None else request.generator.get_state(),
        kv=None,
        geometry=geometry_fingerprint(engine.config),
        snapshot_id=snapshot_id,
        epoch=request.epoch,
    )
    return PullParams(
        snapshot=snapshot,
        remote_block_ids=tuple(request.block_table[: -(-n // block_size)]),
        remote_block_size=block_size,
        kv_layout=engine.kv_layout,
        expires_at=deadline,
    )
    # END SOLUTION


def heartbeat(engine: Engine, snapshot_ids: list[str]) -> dict[str, float]:
    """The source receives a reader's heartbeat naming the handoffs it is still going to read (vLLM's
    decode sends one every ``lease // 6`` while the request waits in its queue).

    Every ACTIVE lease named (past its deadline or not: its blocks are still held until the source
    reaps it) must then run until at least two thirds of its ``lease_s`` from now on ``engine.clock``
    (exactly two thirds, in seconds as a float: the LAB's rule; vLLM floors ``kv_lease_duration * 2 // 3``
    to whole seconds, ``nixl/base_worker.py``: ``NixlBaseConnectorWorker.__init__``);
    a heartbeat never brings a deadline closer. Ids that are not active leases here (unknown,
    committed, expired) are ignored: a heartbeat cannot bring back blocks that are already free.
    Returns ``{snapshot_id: deadline}`` for the active leases named, their deadlines after the beat
    (the lab's acknowledgement: vLLM's heartbeat is one-way), so the reader knows its new deadline.
    Sanity anchor: a 30 s lease exported at 100 s and beaten at 115 s runs until 135 s.
    """
    # BEGIN SOLUTION lab-01 task 5: push each active lease's deadline out to at least now + 2/3 of it; never pull it in
    now, deadlines = engine.clock(), {}
    for snapshot_id in snapshot_ids:
        lease = engine.leases.get(snapshot_id) if snapshot_id in engine.leases else None
        if lease is None or lease.state != LeaseState.ACTIVE:
            continue
        lease.deadline = max(lease.deadline, now + lease.lease_s * 2 / 3)
        deadlines[snapshot_id] = lease.deadline
    return deadlines
    # END SOLUTION


def reap_expired(engine: Engine) -> list[str]:
    """The source ends every ACTIVE lease whose deadline has passed (``engine.clock() >= deadline``):
    its blocks are freed and it becomes EXPIRED. Nothing resumes anywhere (the request finished here
    when it was exported). Returns the snapshot ids reaped, in the order the leases were opened.
    Unexpired leases are left alone.
    """
    # BEGIN SOLUTION lab-01 task 5: free the blocks of every active lease past its deadline; nothing comes back
    now, reaped = engine.clock(), []
    for lease in engine.leases.active():
        if lease.expired(now):
            engine.block_pool.free(lease.request.block_table)
            lease.request.block_table = []
            lease.state = LeaseState.EXPIRED
            reaped.append(lease.snapshot_id)
    return reaped
    # END SOLUTION


def notify_read_done(engine: Engine, snapshot_id: str) -> ReadVerdict:
    """The source receives a reader's notification for ``snapshot_id``. It rides on the read, so the
    read is already over: the source cannot refuse it, only say what it was worth.

    - The lease is ACTIVE (its blocks were held for the whole read, even if its deadline has passed
      and it was not reaped yet): free the blocks, the lease is COMMITTED, answer IN_TIME.
    - The lease EXPIRED (its blocks were freed, maybe reused, maybe during the read): it becomes LATE,
      answer EXPIRED. This first late reader now owns the request (nobody else read it in time).
    - Anything else (a lease this notification's lease already settled: COMMITTED or LATE; an id this
      engine never leased): answer NOT_YOURS, change nothing else.
    Every notification that does not find an active lease adds one to
    ``engine.leases.late_notifications`` (vLLM counts them and logs "Potentially invalid KV blocks";
    answering the reader is the LAB's addition). Never raises.
    """
    # BEGIN SOLUTION lab-01 task 5: judge the read by the lease's state (not the clock): held means in time
    lease = engine.leases.get(snapshot_id) if snapshot_id in engine.leases else None
    if lease is not None and lease.state == LeaseState.ACTIVE:
        engine.block_pool.free(lease.request.block_table)
        lease.request.block_table = []
        lease.state = LeaseState.COMMITTED
        return ReadVerdict.IN_TIME
    engine.leases.late_notifications += 1
    if lease is not None and lease.state == LeaseState.EXPIRED:
        lease.state = LeaseState.LATE
        return ReadVerdict.EXPIRED
    return ReadVerdict.NOT_YOURS
    # END SOLUTION


def start_pull(engine: Engine, params: PullParams) -> None:
    """The reader takes in a pulled request before its K/V arrives: its blocks are claimed now and held
    while the read is in flight (vLLM's WAITING_FOR_REMOTE_KVS; ``engine.await_remote_kv``).

    - Refused with SnapshotError, touching nothing: whatever ``validate_snapshot`` refuses of
      ``params.snapshot`` (except its K/V, which is not here yet); a source whose ``kv_layout``
      differs from this engine's (a block is read as raw bytes: another layout would arrive
      scrambled); a source block size this engine's block size is not a multiple of (vLLM reads each
      remote block into a slice of one local block, ``TransferTopology.block_size_ratio``); and
      ``remote_block_ids`` that do not name as many source blocks as the K/V's positions fill (the
      ids are the source's own: the reader can only count them).
    - Claims the same blocks ``import_request`` would, in one all-or-nothing allocation
      (OutOfBlocksError propagates, nothing claimed). The request is live here at
      ``params.snapshot.epoch + 1``, holding those blocks, not scheduled.
    - A failure after the claim gives the blocks back and re-raises: the engine is as it was.
    """
    # BEGIN SOLUTION lab-01 task 5: validate (no K/V yet), check layout and block-size ratio, claim the blocks, wait for the read
    snapshot, c = params.snapshot, engine.config
    n = snapshot.num_computed_tokens
    placeholder = torch.zeros((max(n, 0), c.num_layers, 2, c.num_kv_heads, c.head_dim), dtype=c.dtype)
    validate_snapshot(engine, dataclasses.replace(snapshot, kv=placeholder))  # everything but the K/V
    if params.kv_layout != engine.kv_layout:
        raise SnapshotError(
            f"KV layout {params.kv_layout} (source) != {engine.kv_layout} (here): raw blocks would arrive scrambled"
        )
    remote = params.remote_block_size
    if not (isinstance(remote, int) and remote >= 1 and engine.block_size % remote == 0):
        raise SnapshotError(
            f"this engine's block size {engine.block_size} is not a multiple of the source's {remote}: "
            "each source block must land in a slice of one local block"
        )
    if len(params.remote_block_ids) != -(-n // remote):
        raise SnapshotError(
            f"{n} positions in blocks of {remote} are {-(-n // remote)} source blocks, "
            f"params name {len(params.remote_block_ids)}"
        )
    block_ids = engine.block_pool.allocate(-(-(n + 1) // engine.block_size))
    try:
        request = Request(
            snapshot.request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )
        if request.generator is not None:
            request.generator.set_state(snapshot.generator_state)
        request.block_table = block_ids
        request.epoch = snapshot.epoch + 1
        engine.await_remote_kv(request)
    except BaseException:
        engine.block_pool.free(block_ids)
        raise
    # END SOLUTION


def finish_pull(
    dst: Engine,
    src: Engine,
    params: PullParams,
    clock_offset: float = 0.0,
    margin_s: float = 5.0,
    policy: str = "fail",
) -> str:
    """The reader's read of a request ``start_pull`` admitted, and everything after it; returns
    ``"imported"``, ``"recomputed"`` or ``"failed"``.

    ``clock_offset`` is the reader's estimate of ``src.clock() - dst.clock()`` (from the handshake,
    ``estimate_clock_offset``; stale if a clock drifts). ``params.expires_at`` is the deadline the
    reader knows (the export's, or a later one a heartbeat acknowledged).
    1. The LAB's hardening (vLLM applies it only to the bidirectional turn-2 readback,
       ``_is_turn2_read_expired``): the read is declined when it would start within ``margin_s`` of
       ``params.expires_at`` (exactly ``margin_s`` before it included), judged on the reader's best
       guess of the source's clock: its own clock plus ``clock_offset``, right or stale (the reader
       sees neither the source's clock nor its lease table: a later deadline counts only once a
       heartbeat's acknowledgement has put it into ``params``).
    2. Otherwise the read: the source's blocks ``params.remote_block_ids`` read in place, as raw bytes
       (``src.kv_cache.read_raw``: whatever those blocks hold now; the source cannot refuse), written
       into the request's blocks here (``dst.kv_cache.write_raw``) so every position lands at its
       logical place.
    3. The notification, always (read, declined, or failed): ``notify_read_done(src,
       params.snapshot.snapshot_id)``, after the read. Its verdict decides:
       - IN_TIME and the read went through: the request runs here (``admit_running``), its K/V
         computed for ``num_computed_tokens`` positions: "imported".
       - EXPIRED, or the read was declined or raised an ``Exception`` (reading, writing or admitting;
         anything else, a KeyboardInterrupt say, propagates): a LOAD FAILURE,
         handled by ``policy`` (vLLM's ``kv_load_failure_policy``): "recompute": the request waits
         here holding no blocks, to recompute its K/V from its tokens: "recomputed"; "fail": it is
         dropped, its blocks freed, ``dst.failed[request_id]`` says why: "failed".
       - NOT_YOURS: another reader owns the request: dropped and recorded in ``dst.failed``
         whatever the policy (recomputing would run it twice): "failed".
    A read that may have raced expiry is never imported, and whatever happens no block this pull
    claimed is left held by nobody.
    ValueError, changing nothing on either engine, for a policy other than "fail" or "recompute", or
    when ``params``'s request is not waiting for remote K/V on ``dst`` (never started here, or
    already finished by an earlier ``finish_pull``: a replayed completion must not touch the request).
    """
    # BEGIN SOLUTION lab-01 task 5: maybe decline, read the raw blocks in place, notify, then let the verdict decide
    if policy not in ("fail", "recompute"):
        raise ValueError(f"policy must be 'fail' or 'recompute', got {policy!r}")
    rid, snapshot_id = params.snapshot.request_id, params.snapshot.snapshot_id
    request = dst.requests.get(rid)
    if request is None or request.status != RequestStatus.WAITING_FOR_REMOTE_KVS:
        raise ValueError(f"{rid!r} is not waiting for remote K/V on this engine (start_pull it first)")
    read, why = False, "declined: too close to the lease's deadline"
    if dst.clock() + clock_offset + margin_s < params.expires_at:
        try:
            ratio, remote = dst.block_size // params.remote_block_size, params.remote_block_size
            raw = src.kv_cache.read_raw(list(params.remote_block_ids))  # one-sided: nobody on src is asked
            for j, block in enumerate(raw):
                dst.kv_cache.write_raw(request.block_table[j // ratio], block, (j % ratio) * remote)
            read = True
        except Exception as exc:  # noqa: BLE001 - a transport or write error is a load failure
            why = f"read failed: {exc!r}"
    verdict = notify_read_done(src, snapshot_id)  # rides on the read: sent when it is over
    dst.detach_request(rid)
    if verdict == ReadVerdict.IN_TIME and read:
        request.num_computed_tokens = params.snapshot.num_computed_tokens
        try:
            dst.admit_running(request)
            return "imported"
        except Exception as exc:  # noqa: BLE001 - admission failing is a load failure too
            why = f"admission failed: {exc!r}"
    elif verdict == ReadVerdict.EXPIRED:
        why = "the lease expired before the read was acknowledged: its blocks may have been reused"
    dst.block_pool.free(request.block_table)
    request.block_table, request.num_computed_tokens = [], 0
    if verdict == ReadVerdict.NOT_YOURS:
        dst.failed[rid] = "not ours: another reader owns this handoff (or the source never leased it)"
        return "failed"
    if policy == "recompute":
        dst.enqueue_waiting(request)  # holds nothing: the engine recomputes its K/V from its tokens
        return "recomputed"
    dst.failed[rid] = why
    return "failed"
    # END SOLUTION


# ------------------------------------------------------------------ task 6: a prefix-aware import
@dataclass(frozen=True)
class PrefixImport:
    reused_blocks: int  # destination blocks shared from its prefix cache: reference +1, nothing written
    shipped_blocks: int  # destination blocks whose K/V came over the wire (the last may be partial;
    # the headroom block for the next token is not counted: nothing crosses the wire into it)
    shipped_bytes: int  # K/V bytes written: every computed position after the reused prefix


def import_prefix_aware(engine: Engine, snapshot: RequestSnapshot) -> PrefixImport:
    """``import_request``, but the destination reuses the K/V its prefix cache already holds and only
    the rest crosses the wire; return what was reused and what was shipped.

    Contract (everything ``import_request`` promises, plus):
    - The lookup keys are the chained hashes (``hash_block_tokens`` / ``full_block_hashes``, in
      ``engine.block_size`` blocks) of the FULL blocks of the snapshot's COMPUTED positions
      (0..num_computed_tokens-1): a partial block is still being written, and the last sampled token
      has no K/V yet. The hit is the run of cached blocks from block 0 to the first miss
      (``engine.prefix_cache.lookup``). An engine without prefix caching (``engine.prefix_cache`` is
      None) reuses nothing.
    - Hit blocks are shared, not copied (a reference more each, nothing written into them) and head
      the request's block table. The request still costs the same blocks in all as with
      ``import_request``; the others are fresh, and only positions after the hit are written. The snapshot's
      K/V at hit positions is never read (a real pull does not even fetch it) nor validated: it may
      hold anything, NaN included, and that is no reason to refuse (everything else
      ``validate_snapshot`` checks still is, NaN at a position after the hit included).
    - Room: the fresh blocks AND the hit blocks that sit on the free list must fit in the free
      blocks (``block_pool.num_evictable``). Otherwise OutOfBlocksError, before anything is touched;
      but validation comes first, as in ``import_request``: a snapshot validation refuses (NaN after
      the hit included) raises SnapshotError even when there is no room either.
    - After admission, the full blocks written here are named in the prefix cache
      (``engine.prefix_cache.insert``), so the next request with this prefix reuses them.
    - Refused (SnapshotError, OutOfBlocksError): nothing changes at all, not even the free list's
      order or the cache. Failing later (the copy, admission): the error is re-raised and every
      reference taken is given back (the same free blocks and reference counts as before).
    - ``shipped_blocks`` counts the blocks positions after the hit were written into; the headroom
      block (the one more a request whose K/V fills its last block exactly gets for its next token)
      is in the table but not counted: nothing crossed the wire into it. ``shipped_bytes`` is those
      positions times ``engine.config.kv_bytes_per_token``.
    Sanity anchor: 4-token blocks, 14 computed positions, the destination caches the first 8: 2 blocks
    reused, positions 8..13 shipped.
    """
    # BEGIN SOLUTION lab-01 task 6: share what the destination's prefix cache already holds; ship and write only the rest
    n, block_size = snapshot.num_computed_tokens, engine.block_size
    pool, cache = engine.block_pool, engine.prefix_cache
    tokens = (*snapshot.prompt_token_ids, *snapshot.output_token_ids)
    hashes = full_block_hashes(tokens[:n], block_size)
    hit = cache.lookup(hashes) if cache is not None else []  # reads only: nothing changes yet
    kv = snapshot.kv
    if hit and isinstance(kv, torch.Tensor) and kv.shape[:1] == (n,):
        kv = kv.clone()
        kv[: len(hit) * block_size] = 0  # the hit positions are never read: they may hold anything
    validate_snapshot(engine, dataclasses.replace(snapshot, kv=kv))
    fresh = -(-(n + 1) // block_size) - len(hit)
    if fresh + pool.num_evictable(hit) > pool.num_free:  # hits on the free list take free blocks too
        raise OutOfBlocksError(fresh + pool.num_evictable(hit), pool.num_free)
    pool.touch(hit)  # first: allocating could otherwise hand a free-but-cached hit out as a new block
    block_ids = hit + pool.allocate(fresh)
    try:
        kv = engine.kv_cache.kv
        for p in range(len(hit) * block_size, n):
            kv[block_ids[p // block_size], p % block_size] = snapshot.kv[p]
        request = Request(
            snapshot.request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )
        if request.generator is not None:  # a counter-sampled request has none (task 8)
            request.generator.set_state(snapshot.generator_state)
        request.block_table = block_ids
        request.num_computed_tokens = n
        request.epoch = snapshot.epoch + 1
        engine.admit_running(request)
    except BaseException:
        pool.free(block_ids)  # one reference each: the hits go back to their other holders (or the cache)
        raise
    for i in range(len(hit), len(hashes) if cache is not None else 0):  # name what was written: full blocks
        cache.insert(hashes[i], block_ids[i])
    return PrefixImport(
        reused_blocks=len(hit),
        shipped_blocks=-(-n // block_size) - len(hit),
        shipped_bytes=(n - len(hit) * block_size) * engine.config.kv_bytes_per_token,
    )
    # END SOLUTION


# ------------------------------------------------------------------ task 7: a partly failed transfer
def import_with_load_errors(engine: Engine, snapshot: RequestSnapshot, failed_blocks: set[int]) -> int:
    """Import ``snapshot`` when the transport reports that some blocks arrived corrupt: keep every
    position of the K/V that is good AND usable, recompute the rest; return how many positions will be
    recomputed.

    ``failed_blocks`` are block indices in ``engine.block_size`` units (block i = positions
    i*block_size .. (i+1)*block_size - 1 of the snapshot's K/V), as a transport's per-block checksum
    would report them. The engine's computed K/V is a PREFIX (``num_computed_tokens``: the positions
    from there on are computed by its next step), so decide which positions can be kept. What is not
    kept is never read nor its values validated: whatever it holds, NaN included, is no reason to refuse
    (everything else ``validate_snapshot`` checks still is, NaN in what is kept included).
    - Something is kept: the request is imported RUNNING with exactly that much K/V written and
      computed; it claims the same blocks as ``import_request`` and is admitted through
      ``engine.admit_running``; its next step pushes the positions not kept plus the usual decoded one
      through the model.
    - Nothing can be kept: the request is readmitted by recompute (task 4); it waits holding no blocks,
      so there is no OutOfBlocksError then, however full the pool is.
    - Nothing failed: exactly ``import_request``; returns 0.
    - The request's epoch is snapshot.epoch + 1 and its random stream continues (as ``import_request``).
    Refused, the engine unchanged, checked in this order: a plain ValueError (not a SnapshotError)
    for a block index outside [0, ceil(num_computed_tokens / block_size)) (the blocks that hold
    K/V; the headroom block for the next token holds none); then SnapshotError for what validation
    refuses (on every path, the K/V's shape and dtype included even when nothing is kept: one row
    per computed position, as in ``import_request``); then OutOfBlocksError (when something is
    kept) when the blocks are not free. A failure after allocation gives the blocks back and
    re-raises. The snapshot is never modified.
    Sanity anchor: a report that names every block recomputes every position.
    """
    # BEGIN SOLUTION lab-01 task 7: keep what can be kept, recompute the rest
    n, block_size = snapshot.num_computed_tokens, engine.block_size
    bad = sorted(b for b in failed_blocks if not (isinstance(b, int) and 0 <= b < -(-n // block_size)))
    if bad:
        raise ValueError(f"failed block indices {bad} outside [0, {-(-n // block_size)}) for {n} positions")
    if not failed_blocks:
        import_request(engine, snapshot)
        return 0
    keep = min(failed_blocks) * block_size
    kv = snapshot.kv.clone() if isinstance(snapshot.kv, torch.Tensor) else snapshot.kv
    if isinstance(kv, torch.Tensor) and kv.shape[:1] == (n,):
        kv[keep:] = 0  # what is dropped is never checked: it may hold anything
    validate_snapshot(engine, dataclasses.replace(snapshot, kv=kv))
    if keep == 0:
        readmit_by_recompute(engine, snapshot)
        return n
    block_ids = engine.block_pool.allocate(-(-(n + 1) // block_size))
    try:
        for p in range(keep):
            engine.kv_cache.kv[block_ids[p // block_size], p % block_size] = snapshot.kv[p]
        request = Request(
            snapshot.request_id,
            list(snapshot.prompt_token_ids),
            snapshot.sampling_params,
            list(snapshot.output_token_ids),
        )
        if request.generator is not None:  # a counter-sampled request has none (task 8)
            request.generator.set_state(snapshot.generator_state)
        request.block_table = block_ids
        request.num_computed_tokens = keep
        request.epoch = snapshot.epoch + 1
        engine.admit_running(request)
    except BaseException:
        engine.block_pool.free(block_ids)
        raise
    return n - keep
    # END SOLUTION


@dataclass(frozen=True)
class PartialRecoveryCost:
    kept_tokens: int  # positions whose shipped K/V is kept: the prefix before the first failed block
    ship_bytes: int  # K/V bytes of the kept prefix
    recompute_tokens: int  # positions recomputed: the rest of the computed K/V
    recompute_flops: int  # model FLOPs for them, counted as in recovery_cost
    ship_s: float  # ship_bytes over the link
    recompute_s: float  # recompute_flops at the compute rate
    total_s: float  # ship_s + recompute_s


def partial_recovery_cost(
    snapshot: RequestSnapshot,
    config: ModelConfig,
    block_size: int,
    failed_blocks: set[int],
    link_gbps: float,
    flops_per_s: float,
) -> PartialRecoveryCost:
    """What ``import_with_load_errors`` costs: ship what it keeps, recompute the rest.

    Priced with task 4's model (``recovery_cost``): the positions ``import_with_load_errors`` keeps (in
    ``block_size`` blocks) are shipped K/V; the other computed positions are recomputed, and a
    position costs what it costs in a full recompute: recomputing only some positions changes which
    positions are paid for, not what each one costs. Bytes that crossed the wire but are not kept
    count for nothing. No failed block: all shipped, nothing recomputed.
    Raises ValueError for a block index outside [0, ceil(num_computed_tokens / block_size)), a
    block size below 1, or rates ``recovery_cost`` refuses (both rates are checked whatever failed,
    even when nothing is recomputed).
    """
    # BEGIN SOLUTION lab-01 task 7: price what is kept as shipped and the rest as recomputed, with task 4's model
    n = snapshot.num_computed_tokens
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    bad = sorted(b for b in failed_blocks if not (isinstance(b, int) and 0 <= b < -(-n // block_size)))
    if bad:
        raise ValueError(f"failed block indices {bad} outside [0, {-(-n // block_size)}) for {n} positions")
    keep = min(failed_blocks) * block_size if failed_blocks else n
    whole = recovery_cost(snapshot, config, link_gbps, flops_per_s)
    prefix_only = dataclasses.replace(snapshot, num_computed_tokens=keep)
    prefix = recovery_cost(prefix_only, config, link_gbps, flops_per_s)
    recompute_flops = whole.recompute_flops - prefix.recompute_flops
    recompute_s = recompute_flops / flops_per_s
    return PartialRecoveryCost(
        kept_tokens=keep,
        ship_bytes=prefix.ship_bytes,
        recompute_tokens=n - keep,
        recompute_flops=recompute_flops,
        ship_s=prefix.ship_s,
        recompute_s=recompute_s,
        total_s=prefix.ship_s + recompute_s,
    )
    # END SOLUTION


# ------------------------------------------------------------------ task 8: randomness with no state to carry
def counter_sample(logits: torch.Tensor, request: Request) -> int:
    """The counter-based draw for a request with ``SamplingParams(rng="counter")`` and temperature > 0;
    an engine uses it as ``Engine(..., counter_sampler=counter_sample)`` (see ``Engine.step`` for when
    it calls you, and with which logits). Returns one token id.

    The draw is Gumbel-max (README) from the distribution the stateful sampler draws from
    (``apply_temperature_top_k``), with ``gumbel_noise`` as its noise, keyed on what every engine
    knows about the request and on nothing that names it here (each engine has its own name for a
    request: vLLM's prefill and decode give it different internal ids):
    - ``seed``: the request's ``sampling_params.seed``, all 64 bits of it;
    - ``position``: the 0-based place, in the whole sequence (prompt included), of the token whose
      logits these are (vLLM's V2 runner keys on ``positions[logits_indices]``).
    So the same request draws the same token at the same point on any engine, after any move,
    preemption or recompute: there is no generator, and nothing but the seed has to travel.
    The arithmetic is pinned too: the argmax is taken over the helpers' float64 values as they come
    (rounded to a narrower dtype, two engines could draw differently on a near-tie). ``request`` is
    not changed.
    """
    # BEGIN SOLUTION lab-01 task 8: a Gumbel-max draw keyed on what every engine knows about the request
    params = request.sampling_params
    shaped = apply_temperature_top_k(logits, params.temperature, params.top_k)
    position = request.num_tokens - 1  # the last token's index in the whole sequence: its logits are these
    return int(torch.argmax(shaped + gumbel_noise(params.seed, position, logits.numel())))
    # END SOLUTION

# STARTER FILE - your work goes here. Replace each `raise NotImplementedError(...)` with code that
# meets the docstring above it, then grade yourself: see this lab's README ('How to grade').
# (Instructors: generated from solution.py by `make starters`; edit solution.py, not this file.)
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
    raise NotImplementedError("lab-01 task 1: capture what another engine needs to continue the request, then give its blocks back")


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
    raise NotImplementedError("lab-01 task 2: refuse anything the engine could not run to completion; touch nothing")


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
    raise NotImplementedError("lab-01 task 2: continue the request here, billed exactly, or leave the engine as it was")


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
    raise NotImplementedError("lab-01 task 3: move the request; if anything after the export fails, the source gets it back as it left")


def readmit_by_recompute(engine: Engine, snapshot: RequestSnapshot) -> None:
    """The other recovery strategy: discard ``snapshot.kv`` and queue the request on ``engine`` as
    WAITING with its prompt AND output tokens and its random stream where it left off, so the engine's
    next step recomputes the K/V of every token (the prefill is paid again) and then samples the next
    token exactly as if the request had never moved. Allocates nothing itself. The request is one move
    further (``snapshot.epoch + 1``), as after an import.

    Refuses with SnapshotError, the engine unchanged, whatever ``validate_snapshot`` would refuse
    except the K/V itself: it is never read, so what it holds (its shape, NaN) is no reason to refuse.
    """
    raise NotImplementedError("lab-01 task 4: queue the request to recompute its K/V, refusing what could not continue (its K/V aside)")


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
    raise NotImplementedError("lab-01 task 4: price shipping the K/V against recomputing it")


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
    raise NotImplementedError("lab-01 task 5: finish the request here, keep its blocks under a lease, hand out where they are")


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
    raise NotImplementedError("lab-01 task 5: push each active lease's deadline out to at least now + 2/3 of it; never pull it in")


def reap_expired(engine: Engine) -> list[str]:
    """The source ends every ACTIVE lease whose deadline has passed (``engine.clock() >= deadline``):
    its blocks are freed and it becomes EXPIRED. Nothing resumes anywhere (the request finished here
    when it was exported). Returns the snapshot ids reaped, in the order the leases were opened.
    Unexpired leases are left alone.
    """
    raise NotImplementedError("lab-01 task 5: free the blocks of every active lease past its deadline; nothing comes back")


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
    raise NotImplementedError("lab-01 task 5: judge the read by the lease's state (not the clock): held means in time")


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
    raise NotImplementedError("lab-01 task 5: validate (no K/V yet), check layout and block-size ratio, claim the blocks, wait for the read")


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
    raise NotImplementedError("lab-01 task 5: maybe decline, read the raw blocks in place, notify, then let the verdict decide")


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
    raise NotImplementedError("lab-01 task 6: share what the destination's prefix cache already holds; ship and write only the rest")


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
    raise NotImplementedError("lab-01 task 7: keep what can be kept, recompute the rest")


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
    raise NotImplementedError("lab-01 task 7: price what is kept as shipped and the rest as recomputed, with task 4's model")


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
    raise NotImplementedError("lab-01 task 8: a Gumbel-max draw keyed on what every engine knows about the request")

"""minivllm: a miniature paged-KV inference engine, given support code for lab-01 (not student work).

One concept per file, in the spirit of nano-vllm, with vLLM v1 names where they help:

- ``model.py``      TinyDecoder: a few-layer GQA transformer with RoPE, batch-invariant by construction.
- ``block_pool.py`` BlockPool: the scheduler-side free list of physical KV blocks (all-or-nothing).
- ``kv_cache.py``   KVCache: the worker-side paged K/V tensor those block ids index into.
- ``sequence.py``   SamplingParams and Request (per-request randomness: a seeded torch.Generator, or none).
- ``sampler.py``    greedy / temperature + top-k sampling; stateful or counter-based (hash-keyed) noise.
- ``engine.py``     Engine: continuous batching, preemption by recompute, and the hooks a KV handoff needs.
- ``snapshot.py``   RequestSnapshot (what crosses the wire, with its id and epoch) and the geometry fingerprint.
- ``lease.py``      leases: blocks a source holds for a remote reader until its notification or expiry.
- ``clock.py``      each engine's own clock (offset, drift) and the handshake's offset estimate.
- ``prefix_cache.py`` PrefixCache: chained hashes of full blocks -> the blocks holding them (prefix caching).
"""

from minivllm.block_pool import BlockPool, OutOfBlocksError
from minivllm.clock import ManualClock, SkewedClock, estimate_clock_offset
from minivllm.engine import Engine
from minivllm.kv_cache import KVCache
from minivllm.lease import Lease, LeaseError, LeaseState, LeaseTable, ReadVerdict
from minivllm.model import ModelConfig, TinyDecoder
from minivllm.prefix_cache import PrefixCache, full_block_hashes, hash_block_tokens
from minivllm.sequence import Request, RequestStatus, SamplingParams
from minivllm.snapshot import (
    PullParams,
    RequestSnapshot,
    SnapshotError,
    geometry_fingerprint,
    new_snapshot_id,
)

__all__ = [
    "BlockPool",
    "Engine",
    "KVCache",
    "Lease",
    "LeaseError",
    "LeaseState",
    "LeaseTable",
    "ManualClock",
    "ModelConfig",
    "OutOfBlocksError",
    "PrefixCache",
    "PullParams",
    "ReadVerdict",
    "Request",
    "RequestSnapshot",
    "RequestStatus",
    "SamplingParams",
    "SkewedClock",
    "SnapshotError",
    "TinyDecoder",
    "estimate_clock_offset",
    "full_block_hashes",
    "geometry_fingerprint",
    "hash_block_tokens",
    "new_snapshot_id",
]

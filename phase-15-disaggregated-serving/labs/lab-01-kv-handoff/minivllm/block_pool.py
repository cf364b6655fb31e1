"""BlockPool: which physical KV blocks are free, and how many requests hold each (scheduler side; it
never touches K/V data).

Like vLLM v1's BlockPool (``v1/core/block_pool.py``), it is separate from the KV tensors: a block id is
just an index into the worker's KVCache. Allocation is all-or-nothing, so a request never holds half of
what it asked for. Each block has a reference count: 1 for a block one request holds, more when
requests share a cached prefix (``touch``); a block is free when its count is 0.

The free order is vLLM 0.32.0's (``v1/core/block_pool.py``: ``BlockPool.free_blocks``,
``get_new_blocks``, ``touch``; ``v1/core/single_type_kv_cache_manager.py``: ``SingleTypeKVCacheManager.free``):
- ``free`` releases a request's blocks tail first. A block whose count drops to 0 and that has no hash
  (every block when prefix caching is off, the default) goes to the FRONT of the free list: the very
  next allocation reuses it (vLLM: "LIFO reuse of non-cached blocks"). One that has a hash KEEPS it
  and goes to the BACK ("free but cached": reused last, in LRU order);
- ``allocate`` takes blocks from the front and evicts the hash of any cached block it hands out;
- ``touch`` (a prefix hit, ``enable_caching=True``) adds a reference, taking a free-but-cached block
  off the free list.
"""

from __future__ import annotations

from collections import deque

from minivllm.prefix_cache import PrefixCache


class OutOfBlocksError(RuntimeError):
    """Not enough free blocks for an all-or-nothing allocation; nothing was allocated."""

    def __init__(self, needed: int, free: int):
        super().__init__(f"out of KV blocks: need {needed}, only {free} free")
        self.needed = needed
        self.free = free


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool = False):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        # A fresh pool hands out 0, 1, 2, ...; after some traffic the free list is shuffled, so a
        # request's blocks are rarely contiguous or in order (as in vLLM).
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        self.ref_counts = [0] * num_blocks  # how many requests (or leases) hold each block
        self.prefix_cache = PrefixCache() if enable_caching else None

    @property
    def num_free(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def usage(self) -> float:
        """Fraction of blocks in use, in [0.0, 1.0] (free-but-cached blocks count as free)."""
        return self.num_used / self.num_blocks

    def is_used(self, block_id: int) -> bool:
        return self.ref_counts[block_id] > 0

    def ref_count(self, block_id: int) -> int:
        return self.ref_counts[block_id]

    def num_evictable(self, block_ids: list[int]) -> int:
        """How many of ``block_ids`` sit on the free list (count 0): touching them uses up free blocks."""
        return sum(self.ref_counts[b] == 0 for b in block_ids)

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` free blocks (count 1 each, hashes evicted), or raise OutOfBlocksError and take none."""
        if n < 0:
            raise ValueError(f"cannot allocate {n} blocks")
        if n > self.num_free:
            raise OutOfBlocksError(n, self.num_free)
        ids = [self.free_block_ids.popleft() for _ in range(n)]
        for b in ids:
            if self.prefix_cache is not None:
                self.prefix_cache.evict(b)
            self.ref_counts[b] = 1
        return ids

    def touch(self, block_ids: list[int]) -> None:
        """One more reference to each of ``block_ids`` (blocks a prefix hit shares); a block with count
        0 leaves the free list. Only cached blocks can be touched: a block without a hash is refused,
        none touched."""
        bad = [b for b in block_ids if self.prefix_cache is None or self.prefix_cache.hash_of(b) is None]
        if bad or len(set(block_ids)) != len(block_ids):
            raise ValueError(f"only distinct cached blocks can be shared by a prefix hit, got {block_ids}")
        for b in block_ids:
            if self.ref_counts[b] == 0:
                self.free_block_ids.remove(b)
            self.ref_counts[b] += 1

    def free(self, block_ids: list[int]) -> None:
        """Drop one reference to each block (give a request's blocks in block-table order); a block
        whose count reaches 0 goes back to the free list. Freeing a block nobody holds is a bug: raise,
        free none."""
        ids = list(block_ids)
        bad = [b for b in ids if not 0 <= b < self.num_blocks or self.ref_counts[b] == 0]
        if bad or len(set(ids)) != len(ids):
            used = [b for b in range(self.num_blocks) if self.ref_counts[b]]
            raise ValueError(f"double free or unknown block ids {bad or ids} (in use: {used})")
        front, back = [], []
        for b in reversed(ids):  # the tail first: the deepest prefix is evicted before its parents
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                cached = self.prefix_cache is not None and self.prefix_cache.hash_of(b) is not None
                (back if cached else front).append(b)
        self.free_block_ids.extendleft(reversed(front))  # front = [tail, ..., head]: the tail is reused first
        self.free_block_ids.extend(back)

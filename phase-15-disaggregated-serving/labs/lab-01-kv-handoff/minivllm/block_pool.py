"""BlockPool: which physical KV blocks are free (scheduler side; it never touches K/V data).

Like vLLM v1's BlockPool, it is separate from the KV tensors: a block id is just an index into the
worker's KVCache. Allocation is all-or-nothing, so a request never holds half of what it asked for.
"""

from __future__ import annotations

from collections import deque


class OutOfBlocksError(RuntimeError):
    """Not enough free blocks for an all-or-nothing allocation; nothing was allocated."""

    def __init__(self, needed: int, free: int):
        super().__init__(f"out of KV blocks: need {needed}, only {free} free")
        self.needed = needed
        self.free = free


class BlockPool:
    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        # Freed blocks go to the back, allocations come from the front: after some traffic the free
        # list is shuffled, so a request's blocks are rarely contiguous or in order (as in vLLM).
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self.free_block_ids)

    @property
    def num_used(self) -> int:
        return len(self._used)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use, in [0.0, 1.0]."""
        return self.num_used / self.num_blocks

    def is_used(self, block_id: int) -> bool:
        return block_id in self._used

    def allocate(self, n: int) -> list[int]:
        """Take ``n`` free blocks, or raise OutOfBlocksError and take none."""
        if n < 0:
            raise ValueError(f"cannot allocate {n} blocks")
        if n > self.num_free:
            raise OutOfBlocksError(n, self.num_free)
        ids = [self.free_block_ids.popleft() for _ in range(n)]
        self._used.update(ids)
        return ids

    def free(self, block_ids: list[int]) -> None:
        """Return blocks to the free list. Freeing a block that is not in use is a bug: raise, free none."""
        ids = list(block_ids)
        bad = [b for b in ids if b not in self._used]
        if bad or len(set(ids)) != len(ids):
            raise ValueError(f"double free or unknown block ids {bad or ids} (in use: {sorted(self._used)})")
        self._used.difference_update(ids)
        self.free_block_ids.extend(ids)

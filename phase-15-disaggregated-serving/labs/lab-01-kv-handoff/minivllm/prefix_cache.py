"""PrefixCache: which physical blocks hold the K/V of which token prefix (automatic prefix caching).

A FULL block is named by a chained hash: the hash of its parent block's hash and its own token ids
(``hash_block_tokens``). The chain makes the name mean "these tokens, after exactly that prefix": the
K/V of a position depends on every token before it, so the same block of tokens at another position,
or after another prefix, is other K/V and must not hit. Only full blocks are named: a partial block
is still being written by its request, and its contents are not final.
Mirrors vLLM 0.32.0: ``v1/core/kv_cache_utils.py: hash_block_tokens`` (parent hash + the block's
token ids, sha256 by default: ``config/cache.py: prefix_caching_hash_algo``); ``v1/core/block_pool.py:
BlockPool.cache_full_blocks`` (only full blocks get a hash) and ``get_cached_block``;
``v1/core/single_type_kv_cache_manager.py: FullAttentionManager.find_longest_cache_hit`` (the hit is
the run of cached blocks from block 0, up to the first miss).

The reference counts and the free list live in ``BlockPool``; this map only says which block holds
which hash. A block on the free list (reference count 0) may keep its hash: it is "free but cached",
the first to be reused by a lookup hit, and evicted (its hash forgotten) only when the pool hands it
out as a new block.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

BlockHash = bytes


def hash_block_tokens(parent: BlockHash | None, token_ids: Sequence[int]) -> BlockHash:
    """The name of one full block: sha256 over the parent block's hash (None for block 0) and the
    block's token ids. Example: ``hash_block_tokens(None, [5, 9])`` names a first block holding
    tokens 5 and 9; the same two tokens as block 1 after ``h0`` are ``hash_block_tokens(h0, [5, 9])``,
    a different name."""
    digest = hashlib.sha256(parent or b"\0" * 32)
    digest.update(b"".join(int(t).to_bytes(8, "little", signed=True) for t in token_ids))
    return digest.digest()


def full_block_hashes(token_ids: Sequence[int], block_size: int) -> list[BlockHash]:
    """The chained hashes of every FULL block of ``token_ids`` in order (a partial last block has
    none). Example: 10 tokens in blocks of 4 give 2 hashes (tokens 0-3, then 4-7 after them)."""
    hashes: list[BlockHash] = []
    parent = None
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = hash_block_tokens(parent, token_ids[start : start + block_size])
        hashes.append(parent)
    return hashes


class PrefixCache:
    """Block hash -> the block that holds it, and back. One block per hash (the first one cached
    keeps it; a duplicate block stays unnamed), one hash per block."""

    def __init__(self):
        self._block_of: dict[BlockHash, int] = {}
        self._hash_of: dict[int, BlockHash] = {}

    def __len__(self) -> int:
        return len(self._block_of)

    def get(self, block_hash: BlockHash) -> int | None:
        """The block holding ``block_hash``, or None (a miss)."""
        return self._block_of.get(block_hash)

    def hash_of(self, block_id: int) -> BlockHash | None:
        return self._hash_of.get(block_id)

    def lookup(self, block_hashes: Sequence[BlockHash]) -> list[int]:
        """The longest hit: the blocks holding ``block_hashes[0]``, ``[1]``, ... up to the first miss
        (a later hit after a miss is no use: its K/V needs the missing block's positions too)."""
        hit = []
        for block_hash in block_hashes:
            block_id = self._block_of.get(block_hash)
            if block_id is None:
                break
            hit.append(block_id)
        return hit

    def insert(self, block_hash: BlockHash, block_id: int) -> bool:
        """Name ``block_id`` by ``block_hash`` (its K/V is final: a full, computed block). Returns
        False and changes nothing when another block already holds that hash. A block that had
        another name loses it (as in vLLM, a block has one name at a time)."""
        if self._block_of.get(block_hash, block_id) != block_id:
            return False
        self.evict(block_id)
        self._block_of[block_hash] = block_id
        self._hash_of[block_id] = block_hash
        return True

    def evict(self, block_id: int) -> None:
        """Forget ``block_id``'s hash, if it has one (its block is about to hold other K/V)."""
        block_hash = self._hash_of.pop(block_id, None)
        if block_hash is not None:
            del self._block_of[block_hash]

    def snapshot(self) -> dict[BlockHash, int]:
        """A copy of the map, hash -> block (for tests that prove nothing changed)."""
        return dict(self._block_of)

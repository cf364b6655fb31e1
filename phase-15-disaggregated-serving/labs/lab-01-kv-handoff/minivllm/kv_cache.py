"""KVCache: the worker-side paged K/V storage that block ids index into.

Two views of the same memory:
- ``kv``: the LOGICAL view, ``[num_blocks, block_size, num_layers, 2, num_kv_heads, head_dim]`` (index 0
  of the ``2`` axis is K, 1 is V), whatever the layout. The token at logical position ``p`` of a request
  with block table ``bt`` lives at ``kv[bt[p // block_size], p % block_size]``: one
  ``[num_layers, 2, num_kv_heads, head_dim]`` chunk. The model and the copy-out snapshot (tasks 1-4, 6, 7)
  use this view; reading it copies, writing it writes the storage.
- ``storage``: the PHYSICAL tensor, in the cache's ``layout``. A block is one contiguous run of bytes
  either way; the layout decides how the bytes inside a block are ordered:
  ``"NHD"`` (tokens outermost: ``[num_blocks, block_size, layers, 2, kv_heads, head_dim]``) or
  ``"HND"`` (heads outside tokens: ``[num_blocks, layers, 2, kv_heads, block_size, head_dim]``), named
  after vLLM's per-layer NHD / HND layouts (``VLLM_KV_CACHE_LAYOUT``; the attention backend picks one).
- ``read_raw`` / ``write_raw``: whole blocks as flat bytes, the way a NIXL READ moves them
  (descriptors are ``(address, length)`` per block: no shapes, no layout). Bytes written into a cache of
  another layout are silently scrambled, which is why vLLM's handshake refuses a layout mismatch.
(vLLM keeps one KV tensor per layer instead of one for all layers; the indexing by block id is the same.)
"""

from __future__ import annotations

import math

import torch

from minivllm.model import ModelConfig

LAYOUTS = ("NHD", "HND")


class KVCache:
    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, layout: str = "NHD"):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.config = config
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.layout = layout
        c = config
        if layout == "NHD":
            self.storage = torch.zeros(num_blocks, block_size, *self.token_shape, dtype=c.dtype)
            self.kv = self.storage
        else:
            shape = (num_blocks, c.num_layers, 2, c.num_kv_heads, block_size, c.head_dim)
            self.storage = torch.zeros(shape, dtype=c.dtype)
            self.kv = self.storage.permute(0, 4, 1, 2, 3, 5)  # a view: writes land in the storage

    @property
    def token_shape(self) -> tuple[int, ...]:
        """Shape of one token's K/V: ``[num_layers, 2, num_kv_heads, head_dim]``."""
        c = self.config
        return (c.num_layers, 2, c.num_kv_heads, c.head_dim)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape of one block in the logical view: ``[block_size, num_layers, 2, num_kv_heads, head_dim]``."""
        return (self.block_size, *self.token_shape)

    @property
    def token_numel(self) -> int:
        return math.prod(self.token_shape)

    def read_block(self, block_id: int) -> torch.Tensor:
        """A copy of one block's K/V in the logical view, shape ``block_shape``."""
        return self.kv[block_id].clone()

    def write_block(self, block_id: int, data: torch.Tensor) -> None:
        """Write ``data`` of shape ``[n, num_layers, 2, num_kv_heads, head_dim]`` (n <= block_size) into
        the first ``n`` slots of ``block_id`` (logical view)."""
        if data.dim() != 5 or tuple(data.shape[1:]) != self.token_shape or data.shape[0] > self.block_size:
            raise ValueError(
                f"block data must be [n <= {self.block_size}, {', '.join(map(str, self.token_shape))}], "
                f"got {list(data.shape)}"
            )
        if data.dtype != self.kv.dtype:
            raise ValueError(f"block data dtype {data.dtype} != cache dtype {self.kv.dtype}")
        self.kv[block_id, : data.shape[0]] = data

    def read_raw(self, block_ids: list[int]) -> torch.Tensor:
        """Whole physical blocks as bytes would travel: a new ``[len(block_ids), block_size * token_numel]``
        tensor, each row one block's storage in this cache's layout. Reads whatever the blocks hold now,
        whoever holds them (a one-sided read cannot know)."""
        ids = list(block_ids)
        bad = [b for b in ids if not (isinstance(b, int) and 0 <= b < self.num_blocks)]
        if bad:
            raise ValueError(f"block ids {bad} outside [0, {self.num_blocks})")
        return self.storage[torch.tensor(ids, dtype=torch.long)].reshape(len(ids), -1)

    def write_raw(self, block_id: int, data: torch.Tensor, slot_offset: int = 0) -> None:
        """Write one flat run of raw block bytes ``data`` (``k * token_numel`` elements: a block of ``k``
        tokens laid out in THIS cache's layout) into slots ``slot_offset .. slot_offset + k - 1`` of
        ``block_id``. ValueError (nothing written) when ``data`` is not a whole number of tokens, does
        not fit in the block from ``slot_offset`` on, or has another dtype."""
        c = self.config
        if data.dim() != 1 or data.numel() % self.token_numel:
            raise ValueError(
                f"raw block data must be flat, a multiple of {self.token_numel}, got {list(data.shape)}"
            )
        k = data.numel() // self.token_numel
        if not (0 <= block_id < self.num_blocks and 0 <= slot_offset and slot_offset + k <= self.block_size):
            raise ValueError(
                f"{k} tokens at slot {slot_offset} of block {block_id} do not fit ({self.num_blocks} blocks of "
                f"{self.block_size})"
            )
        if data.dtype != self.storage.dtype:
            raise ValueError(f"raw data dtype {data.dtype} != cache dtype {self.storage.dtype}")
        if self.layout == "NHD":
            self.storage[block_id, slot_offset : slot_offset + k] = data.view(k, *self.token_shape)
        else:
            view = data.view(c.num_layers, 2, c.num_kv_heads, k, c.head_dim)
            self.storage[block_id, :, :, :, slot_offset : slot_offset + k] = view

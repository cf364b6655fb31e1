"""KVCache: the worker-side paged K/V storage that block ids index into.

``kv`` has shape ``[num_blocks, block_size, num_layers, 2, num_kv_heads, head_dim]`` (index 0 of the
``2`` axis is K, 1 is V). The token at logical position ``p`` of a request with block table ``bt``
lives at ``kv[bt[p // block_size], p % block_size]``: one ``[num_layers, 2, num_kv_heads, head_dim]``
chunk. Block-major and token-major, so one block's K/V for every layer is one contiguous run of
bytes: the unit a KV connector ships. (vLLM keeps one ``[2, num_blocks, block_size, num_kv_heads,
head_size]`` tensor per layer instead; the indexing by block id is the same idea.)
"""

from __future__ import annotations

import torch

from minivllm.model import ModelConfig


class KVCache:
    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.config = config
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.kv = torch.zeros(num_blocks, *self.block_shape, dtype=config.dtype)

    @property
    def token_shape(self) -> tuple[int, ...]:
        """Shape of one token's K/V: ``[num_layers, 2, num_kv_heads, head_dim]``."""
        c = self.config
        return (c.num_layers, 2, c.num_kv_heads, c.head_dim)

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape of one block's K/V: ``[block_size, num_layers, 2, num_kv_heads, head_dim]``."""
        return (self.block_size, *self.token_shape)

    def read_block(self, block_id: int) -> torch.Tensor:
        """A copy of one block's K/V, shape ``block_shape``."""
        return self.kv[block_id].clone()

    def write_block(self, block_id: int, data: torch.Tensor) -> None:
        """Write ``data`` of shape ``[n, num_layers, 2, num_kv_heads, head_dim]`` (n <= block_size) into
        the first ``n`` slots of ``block_id``."""
        if data.dim() != 5 or tuple(data.shape[1:]) != self.token_shape or data.shape[0] > self.block_size:
            raise ValueError(
                f"block data must be [n <= {self.block_size}, {', '.join(map(str, self.token_shape))}], "
                f"got {list(data.shape)}"
            )
        if data.dtype != self.kv.dtype:
            raise ValueError(f"block data dtype {data.dtype} != cache dtype {self.kv.dtype}")
        self.kv[block_id, : data.shape[0]] = data

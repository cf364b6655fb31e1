"""KVCache: the worker-side paged K/V storage that block ids index into.

``kv`` has shape ``[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]``: for each layer,
K (index 0) and V (index 1), one row of ``block_size`` token slots per physical block. The token at
logical position ``p`` of a request with block table ``bt`` lives in block ``bt[p // block_size]``,
slot ``p % block_size``. (vLLM keeps one ``[2, num_blocks, block_size, num_kv_heads, head_size]``
tensor per layer; stacking the layers here changes nothing about the indexing.)
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
        self.kv = torch.zeros(
            config.num_layers,
            2,
            num_blocks,
            block_size,
            config.num_kv_heads,
            config.head_dim,
            dtype=config.dtype,
        )

    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape of one block's K/V: ``[num_layers, 2, block_size, num_kv_heads, head_dim]``."""
        c = self.config
        return (c.num_layers, 2, self.block_size, c.num_kv_heads, c.head_dim)

    def read_block(self, block_id: int) -> torch.Tensor:
        """A copy of one block's K/V, shape ``block_shape``."""
        return self.kv[:, :, block_id].clone()

    def write_block(self, block_id: int, data: torch.Tensor) -> None:
        """Write ``data`` of shape ``[num_layers, 2, n, num_kv_heads, head_dim]`` (n <= block_size)
        into the first ``n`` slots of ``block_id``."""
        want = self.block_shape
        if (
            data.dim() != 5
            or data.shape[:2] != want[:2]
            or data.shape[3:] != want[3:]
            or data.shape[2] > want[2]
        ):
            raise ValueError(
                f"block data must be {list(want[:2])} x n<={want[2]} x {list(want[3:])}, got {list(data.shape)}"
            )
        if data.dtype != self.kv.dtype:
            raise ValueError(f"block data dtype {data.dtype} != cache dtype {self.kv.dtype}")
        self.kv[:, :, block_id, : data.shape[2]] = data

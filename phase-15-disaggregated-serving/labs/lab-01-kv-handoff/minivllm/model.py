"""TinyDecoder: a few-layer decoder-only transformer that keeps its K/V in the paged cache.

Grouped-query attention (fewer KV heads than query heads), RoPE positions, RMSNorm, a SwiGLU MLP;
float32 weights drawn from ``config.seed``, so two engines built from equal configs hold equal models.

Batch-invariant by construction: the engine pushes every token of every request through
``forward_token``, one token at a time. A token's math is therefore the same ops on the same shapes
whether it is computed in a prefill, a decode or a recompute, alone or next to other requests, and
with any block size (the context is gathered into a fresh contiguous tensor first). Results are
bit-reproducible, which is what lets the tests assert "identical" exactly. Real engines batch tokens
into one matmul for speed, and then need batch-invariant kernels for the same guarantee (README).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 97
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 8
    intermediate_size: int = 64
    rope_theta: float = 10000.0
    dtype: torch.dtype = torch.float32
    seed: int = 0

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, every layer, every KV head: what one token costs in the cache."""
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * itemsize


class TinyDecoder:
    def __init__(self, config: ModelConfig | None = None):
        self.config = c = config or ModelConfig()
        gen = torch.Generator().manual_seed(c.seed)

        def weight(rows: int, cols: int) -> torch.Tensor:
            return (torch.randn(rows, cols, generator=gen) / rows**0.5).to(c.dtype)

        q_dim, kv_dim = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.embed = torch.randn(c.vocab_size, c.hidden_size, generator=gen).to(c.dtype)
        self.layers = [
            {
                "attn_norm": torch.ones(c.hidden_size, dtype=c.dtype),
                "wqkv": weight(c.hidden_size, q_dim + 2 * kv_dim),
                "wo": weight(q_dim, c.hidden_size),
                "mlp_norm": torch.ones(c.hidden_size, dtype=c.dtype),
                "w_gate_up": weight(c.hidden_size, 2 * c.intermediate_size),
                "w_down": weight(c.intermediate_size, c.hidden_size),
            }
            for _ in range(c.num_layers)
        ]
        self.final_norm = torch.ones(c.hidden_size, dtype=c.dtype)
        # Scaled up so the logits are peaky enough that sampled text is not uniform noise.
        self.lm_head = weight(c.hidden_size, c.vocab_size) * 4
        self._rotations: dict[int, torch.Tensor] = {}

    def rotation(self, position: int) -> torch.Tensor:
        """RoPE as a [head_dim, head_dim] matrix R (rotate-half convention): ``x @ R`` rotates a head
        vector by the angles of ``position``. One matmul rotates q and k together."""
        if position not in self._rotations:
            d, half = self.config.head_dim, self.config.head_dim // 2
            inv_freq = self.config.rope_theta ** (-torch.arange(half, dtype=torch.float64) * 2 / d)
            cos, sin = (position * inv_freq).cos(), (position * inv_freq).sin()
            rot = torch.zeros(d, d, dtype=torch.float64)
            idx = torch.arange(half)
            rot[idx, idx] = rot[idx + half, idx + half] = cos
            rot[idx + half, idx] = -sin
            rot[idx, idx + half] = sin
            self._rotations[position] = rot.to(self.config.dtype)
        return self._rotations[position]

    def forward_token(
        self, token_id: int, position: int, kv: torch.Tensor, block_table: list[int]
    ) -> torch.Tensor:
        """Run one token at ``position``: write its K/V into the paged cache ``kv`` (the logical view,
        [num_blocks, block_size, num_layers, 2, num_kv_heads, head_dim], whatever the physical layout)
        through ``block_table``, attend over positions 0..position read back from that cache, return the
        next-token logits [vocab]."""
        c = self.config
        h, heads, kv_heads, group = c.hidden_size, c.num_heads, c.num_kv_heads, c.num_heads // c.num_kv_heads
        block_size = kv.shape[1]
        # The block and slot of positions 0..position, in logical order.
        positions = torch.arange(position + 1)
        blocks = torch.tensor(block_table[: position // block_size + 1])[positions // block_size]
        offsets = positions % block_size
        # The context of every layer gathered into a fresh contiguous [n, layers, 2, kv_heads, head_dim]
        # tensor: the same shape and strides whatever the block size, the layout or the physical blocks.
        context = kv[blocks, offsets]
        last_block, last_slot = block_table[position // block_size], position % block_size
        rot = self.rotation(position)

        x = self.embed[token_id]
        for i, layer in enumerate(self.layers):
            qkv = (F.rms_norm(x, (h,), layer["attn_norm"]) @ layer["wqkv"]).view(-1, c.head_dim)
            qk = qkv[: heads + kv_heads] @ rot  # RoPE on q and k in one matmul
            new_kv = torch.stack((qk[heads:], qkv[heads + kv_heads :]))  # [2, kv_heads, head_dim]
            kv[last_block, last_slot, i] = new_kv  # into the paged cache...
            context[-1, i] = new_kv  # ...and into this token's view of it
            keys = context[:, i, 0].permute(1, 2, 0)  # [kv_heads, head_dim, n]
            values = context[:, i, 1].transpose(0, 1)  # [kv_heads, n, head_dim]
            scores = (qk[:heads].view(kv_heads, group, c.head_dim) @ keys) * c.head_dim**-0.5
            x = x + (torch.softmax(scores, dim=-1) @ values).flatten() @ layer["wo"]
            gate, up = (F.rms_norm(x, (h,), layer["mlp_norm"]) @ layer["w_gate_up"]).chunk(2)
            x = x + (F.silu(gate) * up) @ layer["w_down"]
        return F.rms_norm(x, (h,), self.final_norm) @ self.lm_head

"""What the lab's CPU connector module (``pdpair.pair.nixl_cpu``) changes in vLLM 0.32's NixlConnector,
readable without vLLM: for ``find_hazards``-style checks, the compatibility matrix and the docs.

The block-size fix (``docs/block-size-bug.md``): vLLM 0.32 accepts a decode block that is a multiple of
prefill's, but on CPU its receive path regroups the pulled sub-blocks as if each row of a block were one
token's ``[K | V]`` (the GPU layout), while CPU attention keeps each head's K region, then its V region,
each in a kernel-specific order (``region_keys``). The decode side then attends over permuted K and V
(HTTP 200, wrong output), and a partly filled last block loses its V. ``pdpair.pair.nixl_cpu`` replaces that receive step for ``CPU_ATTN`` on the side that
RECEIVES (decode, pull mode); ``kv_connector_extra_config: {pdpair_block_size_fix: false}`` switches it
off (the matrix records the pair both ways).
"""

from __future__ import annotations

from typing import Any

FIX_MODULES = ("pdpair.pair.nixl_cpu", "pdpair.evidence.kv_dump")  # the modules that carry the fixes
BLOCK_SIZE_FIX_KEY = "pdpair_block_size_fix"  # kv_connector_extra_config key; false = vLLM's own path


def block_size_fix_enabled(extra_config: dict[str, Any] | None) -> bool:
    """The switch as the connector reads it: on unless ``extra_config[BLOCK_SIZE_FIX_KEY]`` is false."""
    return (extra_config or {}).get(BLOCK_SIZE_FIX_KEY, True) is not False


def fixes_block_size(side: Any) -> bool:
    """True when this ``ServerSpec``'s connector carries the CPU block-size fix, switched on: a CPU side
    whose ``kv_connector_module_path`` is one of ``FIX_MODULES``. It matters on the receiving side
    (decode, in pull mode); the spec must NAME the module (``pdpair.pair.runner.prepare_spec`` adds it
    at run time, a spec check cannot count on that)."""
    return (
        getattr(side, "device", "cpu") == "cpu"
        and getattr(side, "kv_connector_module_path", None) in FIX_MODULES
        and block_size_fix_enabled(getattr(side, "kv_connector_extra_config", None))
    )


def region_keys(write, block_size: int, head_size: int, dtype) -> tuple[Any, Any]:
    """Where CPU attention keeps each K and V element of a block, asked of the kernel that writes them.

    ``write(key, value, key_cache, value_cache, slot_mapping)`` is vLLM 0.32's
    ``_custom_ops.cpu_attn_reshape_and_cache`` with the ISA bound (``vec``, ``vec16``, ``amx``...: each lays
    a block out its own way; measured here: ``vec`` keeps K as ``[head_dim, N]`` and V as ``[N, head_dim]``,
    ``amx`` packs both in tiles). Returns ``(k_keys, v_keys)``, one LongTensor each of ``N * head_size``
    entries: position p of one head's K region (the first ``N * head_size`` elements of the head's
    ``[2N, head_size]`` view) holds token ``k_keys[p] // head_size``, dim ``k_keys[p] % head_size``; the
    same for V. Token and dim are written as small integers, exactly representable in ``dtype``."""
    import torch

    exact = {torch.bfloat16: 256, torch.float16: 2048, torch.float32: 2**24}.get(dtype)
    if exact is None or max(block_size, head_size) >= exact:
        raise ValueError(f"cannot map a {dtype} block of {block_size} x {head_size} exactly")
    n, c = block_size, head_size
    found = []
    for which in ("token", "dim"):
        grid = torch.arange(n).view(n, 1, 1) if which == "token" else torch.arange(c).view(1, 1, c)
        x = (grid.expand(n, 1, c) + 1).to(dtype).contiguous()
        cache = torch.zeros(1, 1, 2 * n, c, dtype=dtype)
        k, v = cache.chunk(2, dim=2)
        write(x, x.clone(), k, v, torch.arange(n))
        found.append(cache[0, 0].reshape(2, n * c).float().long() - 1)
    keys = found[0] * c + found[1]
    for half in keys:
        if not torch.equal(torch.sort(half).values, torch.arange(n * c)):
            raise ValueError("the kernel's block layout is not a permutation of (token, dim)")
    return keys[0], keys[1]


def source_index(local_keys, remote_keys, ratio: int, head_size: int):
    """For each position of a local region of ``ratio * n`` tokens, where its element sits in the received
    bytes: ``ratio`` remote regions of ``n`` tokens back to back (remote region j holds tokens j*n...)."""
    import torch

    size = remote_keys.numel()
    n_tokens = size // head_size
    received = remote_keys.unsqueeze(0) + torch.arange(ratio).unsqueeze(1) * n_tokens * head_size
    where = torch.empty(ratio * size, dtype=torch.long)
    where[received.flatten()] = torch.arange(ratio * size)
    return where[local_keys]


def regroup_cpu_blocks(cache, indices, ratio: int, src_k, src_v) -> None:
    """Received decode blocks of ``cache`` (``[blocks, heads, N, 2*head_size]``, CPU_ATTN) put in the kernel's
    order in place. NIXL wrote prefill block j's raw bytes (``[heads, K region | V region]`` of ``N/ratio``
    tokens) into byte chunk j of the decode block; ``src_k``/``src_v`` (``source_index``) say where each
    element of a decode head's K and V region is among the ``ratio`` received regions of that head."""
    blocks = cache.index_select(0, indices)
    b, h, n, c2 = blocks.shape
    part = (n // ratio) * (c2 // 2)  # elements of one head's K (or V) region in a prefill block
    received = blocks.reshape(b, ratio, h, 2, part).permute(0, 2, 3, 1, 4).reshape(b, h, 2, ratio * part)
    fixed = received.new_empty(b, h, 2, n * (c2 // 2))
    fixed[:, :, 0] = received[:, :, 0, src_k]
    fixed[:, :, 1] = received[:, :, 1, src_v]
    cache.index_copy_(0, indices, fixed.reshape(b, h, n, c2))


def zero_cpu_tail(cache, block_id: int, zero_from: int, local_k, local_v) -> None:
    """Zero token slots ``zero_from..N-1`` of one CPU_ATTN block, in K and V of every head
    (``local_k``/``local_v``: ``region_keys`` of this block size)."""
    _, h, n, c2 = cache.shape
    c = c2 // 2
    region = cache[block_id].view(h, 2, n * c)
    region[:, 0, (local_k // c) >= zero_from] = 0
    region[:, 1, (local_v // c) >= zero_from] = 0

"""CPU fixes for vLLM 0.32's NixlConnector, loaded by vLLM through ``kv_connector_module_path``.

    --kv-transfer-config '{"kv_connector": "NixlConnector", "kv_connector_module_path": "pdpair.pair.nixl_cpu",
                           "kv_role": "kv_producer", "kv_buffer_device": "cpu"}'

in the venv where pdpair is installed (every vLLM process imports this module: the API server and the
EngineCore for the scheduler side, the worker for the worker side). ``pdpair.pair.runner`` sets the config.

The class is called ``NixlConnector`` on purpose: vLLM's string checks
(``kv_transfer_config.has_connector("NixlConnector")``) must still see a NIXL P/D setup. It is the stock
pull connector plus three CPU-only fixes, applied to the connector WORKER when it is built; nothing
installed is edited.

1. nixl 1.5.1's ``nixl_agent.__init__`` (``nixl_cu13/_api.py``) hard-codes ``pthrDelay = 0`` in the agent
   config, so the UCX progress thread polls with a zero timeout and burns a whole core, even idle. While
   the worker builds its agent we swap the ``nixlBind`` global that ``nixl_agent.__init__`` reads for a
   proxy whose ``nixlAgent(name, cfg)`` sets ``cfg.pthrDelay`` (``PD_NIXL_PTHR_DELAY_US``, default 1000)
   and, with ``PD_NIXL_PROG_THREAD=0``, ``cfg.useProgThread = False``; the original is restored after.
2. ``NixlBaseConnectorWorker.__init__`` moves the worker's (only) compute thread to the LAST core of each
   NUMA node on CPU, next to the other instance. We restore the thread's affinity afterwards
   (``PD_NIXL_KEEP_AFFINITY=0`` turns that off). The runner also re-pins every thread of the instance.

3. The block-size fix (``docs/block-size-bug.md``; ``pdpair.pair.fixes``): with decode's block a multiple r
   of prefill's, vLLM 0.32 regroups each received decode block with ``kv_postprocess_blksize_on_receive``
   (``distributed/kv_transfer/kv_connector/utils.py``), which moves whole rows of the
   ``[blocks, heads, N, 2*head_size]`` cache as if a row were one token's ``[K | V]`` (true on GPU). CPU
   attention reads each head as N rows of K then N rows of V (``v1/attention/backends/cpu_attn.py``,
   ``kv_cache.view(num_blocks, num_kv_heads, block_size * 2, -1)``, then ``chunk(2, dim=2)``), each in the
   order of the ISA's cache writer (``vec``: K as ``[head_dim, N]``, V as ``[N, head_dim]``; ``amx``: tiles),
   so the stock regroup puts prefill's V into decode's K region, and the tail zeroing of a partly
   received last block (``nixl/base_worker.py``, ``post_process_device_kv_on_receive``:
   ``cache[last_block_id, :, zero_from:]``) wipes V of real tokens. We replace that method on the worker
   instance, for ``CPU_ATTN`` only (every other backend, MLA, the layout-permute and heterogeneous-attention
   paths go to vLLM's own): each decode element is fetched from where the ISA's writer put it in the
   received prefill blocks (``cpu_layout``: asked of the writer itself), and the tail is zeroed in K and V.
   ``kv_connector_extra_config: {"pdpair_block_size_fix": false}`` keeps vLLM's own method.

Measured on a 2-core machine (idle worker CPU): stock 86-96 % of a core, with this module 2-3 %.
"""

from __future__ import annotations

import contextlib
import functools
import os
import types

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.distributed.kv_transfer.kv_connector.v1.nixl import connector as _stock
from vllm.distributed.kv_transfer.kv_connector.v1.nixl.base_worker import NixlBaseConnectorWorker
from vllm.logger import init_logger

from pdpair.pair.fixes import (
    block_size_fix_enabled,
    region_keys,
    regroup_cpu_blocks,
    source_index,
    zero_cpu_tail,
)

logger = init_logger("vllm.pdpair.nixl_cpu")  # under "vllm." or vLLM's handler prints nothing

PTHR_DELAY_US = int(os.environ.get("PD_NIXL_PTHR_DELAY_US", "1000"))
USE_PROG_THREAD = os.environ.get("PD_NIXL_PROG_THREAD", "1") != "0"
KEEP_AFFINITY = os.environ.get("PD_NIXL_KEEP_AFFINITY", "1") != "0"


class _BindProxy:
    """The real nixl binding module, except that ``nixlAgent`` fixes the config first."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def nixlAgent(self, name, cfg):  # noqa: N802 - mirrors the binding's name
        cfg.pthrDelay = PTHR_DELAY_US
        if not USE_PROG_THREAD:
            cfg.useProgThread = False
        logger.info(
            "pdpair.pair.nixl_cpu: nixl agent %s created with pthrDelay=%d us, useProgThread=%s",
            name,
            cfg.pthrDelay,
            cfg.useProgThread,
        )
        return self._real.nixlAgent(name, cfg)


@contextlib.contextmanager
def _patched_nixl_agent():
    from vllm.distributed import nixl_utils

    wrapper_cls = nixl_utils.NixlWrapper  # nixl's nixl_agent class
    if wrapper_cls is None:
        yield
        return
    globs = wrapper_cls.__init__.__globals__  # the namespace nixl_agent.__init__ reads
    real = globs["nixlBind"]
    globs["nixlBind"] = _BindProxy(real)
    try:
        yield
    finally:
        globs["nixlBind"] = real


@functools.lru_cache(maxsize=16)
def cpu_layout(block_size: int, head_size: int, dtype: torch.dtype, kv_cache_dtype: str = "auto"):
    """``(isa, k_keys, v_keys)`` of a CPU_ATTN block on THIS machine: the ISA vLLM 0.32 picks for it
    (``v1/attention/backends/cpu_attn.py``, ``_get_attn_isa``) and where that ISA's cache writer
    (``_custom_ops.cpu_attn_reshape_and_cache``) puts each token and dim (``pdpair.pair.fixes.region_keys``)."""
    from vllm import _custom_ops as ops
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    isa = _get_attn_isa(dtype, block_size, head_size, kv_cache_dtype)

    def write(key, value, key_cache, value_cache, slots):
        ops.cpu_attn_reshape_and_cache(
            key, value, key_cache, value_cache, slots, isa, kv_cache_dtype=kv_cache_dtype
        )

    return (isa, *region_keys(write, block_size, head_size, dtype))


def _layouts(self, cache: torch.Tensor, ratio: int):
    """(local keys, src_k, src_v) for this worker's blocks and a remote block ``ratio`` times smaller;
    the remote (prefill) side is assumed to run the same ISA as this machine would pick for its block."""
    _, _, n, c2 = cache.shape
    dtype, kv_dtype = self.model_config.dtype, self.vllm_config.cache_config.cache_dtype
    _, lk, lv = cpu_layout(n, c2 // 2, dtype, kv_dtype)
    _, rk, rv = cpu_layout(n // ratio, c2 // 2, dtype, kv_dtype)
    return lk, lv, source_index(lk, rk, ratio, c2 // 2), source_index(lv, rv, ratio, c2 // 2)


def _cpu_post_process(self, block_size_ratio, block_ids_list, convert=True):
    """``NixlBaseConnectorWorker.post_process_device_kv_on_receive`` (vLLM 0.32, nixl/base_worker.py) for
    CPU_ATTN: the same loop with the regroup and the tail zeroing in CPU_ATTN's layout (module docstring,
    fix 3). Any other case is vLLM's own method."""
    if (self.backend_name != "CPU_ATTN" or self.use_mla or self.enable_permute_local_kv
            or self.enable_heterogeneous_attn_post_process or len(self.device_kv_caches) == 0):  # fmt: skip
        return NixlBaseConnectorWorker.post_process_device_kv_on_receive(
            self, block_size_ratio, block_ids_list, convert
        )
    assert block_size_ratio >= 1, "Only nP < nD supported currently."
    for group, block_ids, covered_sub_blocks in block_ids_list:
        names = self.kv_cache_config.transfer_groups[group].layer_names
        caches = [self.device_kv_caches[name] for name in names]
        covered_blocks, sub_blocks_in_last = divmod(covered_sub_blocks, block_size_ratio)
        first_stale = covered_blocks + (1 if sub_blocks_in_last else 0)
        has_stale = first_stale < len(block_ids)
        indices = torch.tensor(block_ids, dtype=torch.long, device=caches[0].device)
        lk, lv, src_k, src_v = _layouts(self, caches[0], block_size_ratio)
        if convert and block_size_ratio > 1:
            for cache in caches:
                regroup_cpu_blocks(cache, indices, block_size_ratio, src_k, src_v)
        if sub_blocks_in_last:
            for cache in caches:
                zero_from = sub_blocks_in_last * (cache.shape[2] // block_size_ratio)
                zero_cpu_tail(cache, block_ids[covered_blocks], zero_from, lk, lv)
        if has_stale:
            for cache in caches:
                cache.index_fill_(0, indices[first_stale:], 0)


def _build_worker(init, self, vllm_config, role, kv_cache_config) -> None:
    if role != KVConnectorRole.WORKER:
        init(self, vllm_config, role, kv_cache_config)
        return
    saved = os.sched_getaffinity(0)
    with _patched_nixl_agent():
        init(self, vllm_config, role, kv_cache_config)
    extra = vllm_config.kv_transfer_config.kv_connector_extra_config
    if block_size_fix_enabled(extra):
        worker = self.connector_worker
        worker.post_process_device_kv_on_receive = types.MethodType(_cpu_post_process, worker)
        logger.info("pdpair.pair.nixl_cpu: CPU_ATTN block-size receive fix installed")
    else:
        logger.info("pdpair.pair.nixl_cpu: block-size receive fix switched OFF (vLLM's own path)")
    if KEEP_AFFINITY:
        moved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, saved)
        logger.info(
            "pdpair.pair.nixl_cpu: restored worker affinity %s (NIXL had set %s)",
            sorted(saved),
            sorted(moved),
        )


class NixlConnector(_stock.NixlPullConnector):
    """vLLM's NixlConnector (pull) with the two CPU fixes."""

    def __init__(self, vllm_config, role, kv_cache_config=None):
        _build_worker(_stock.NixlPullConnector.__init__, self, vllm_config, role, kv_cache_config)


class NixlPullConnector(NixlConnector):
    """The same pull connector under vLLM's explicit name (``connector: NixlPullConnector`` in a spec)."""


class NixlPushConnector(_stock.NixlPushConnector):
    """The push variant with the same fixes (run by the compatibility matrix's push rows)."""

    def __init__(self, vllm_config, role, kv_cache_config=None):
        _build_worker(_stock.NixlPushConnector.__init__, self, vllm_config, role, kv_cache_config)

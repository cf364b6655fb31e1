"""A probe connector: ``pdpair.pair.nixl_cpu``'s NixlConnector that also saves the KV blocks each side held for
a handed-off request, so the bytes decode pulled can be compared with the bytes prefill computed.

    kv_connector_module_path: pdpair.evidence.kv_dump        (both sides; PD_KV_DUMP_DIR=<folder> in their env)

Used by the output oracle's part (a) (``pdpair.evidence.oracle``: ``probe_identity.py``, the matrix, the
identity tests), never by the graded pair. Files, one per request, side and TP rank, in ``PD_KV_DUMP_DIR``
(nothing is written while it is unset):

- prefill: ``prefill-<prefill request id>.tp<rank>.pt`` when decode has read the blocks (the worker
  reports the request's sending finished; the blocks are freed only after that), from the block ids
  vLLM's scheduler passed to ``request_finished`` (``prefill-<id>.json``, written by the scheduler process);
- decode: ``decode-<prefill request id>.tp<rank>.pt`` when the NIXL read has finished and vLLM's receive
  post-processing (block-size regrouping, tail zeroing) has run, before decode's first forward step
  recomputes the last prompt token (vLLM 0.32 ``v1/core/sched/scheduler.py``,
  ``_update_waiting_for_remote_kv``: ``num_computed_tokens = num_tokens - 1`` on a full hit).

Each ``.pt`` holds ``{"blocks": {layer: tensor}, "block_ids": [...], "block_dim": d, "tp_rank", "tp_size",
"total_kv_heads", "attn_backend", "block_size", "layout"}``: every layer's cache tensor indexed by the
request's (kernel) block ids along dimension ``d``, on CPU, bit for bit; for CPU_ATTN, ``layout`` is where
this machine's cache writer puts each token and dim in a block (``pdpair.pair.nixl_cpu.cpu_layout``), so
the oracle can read tokens out of any ISA's blocks. An empty ``<same name>.done`` is written after it, so
a reader never loads a half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.logger import init_logger

from pdpair.pair import nixl_cpu

logger = init_logger("vllm.pdpair.kv_dump")
DUMP_DIR = os.environ.get("PD_KV_DUMP_DIR")


def _flat(block_ids) -> list[int]:
    """One KV-cache group's ids from vLLM's per-group tuple (a plain list passes through)."""
    if block_ids and isinstance(block_ids[0], (list, tuple)):
        assert len(block_ids) == 1, "one KV-cache group expected (a plain attention model)"
        return list(block_ids[0])
    return list(block_ids)


class NixlConnector(nixl_cpu.NixlConnector):
    """The CPU pull connector (with the lab's CPU fixes) plus the dumps described in the module docstring."""

    def __init__(self, vllm_config, role, kv_cache_config=None):
        super().__init__(vllm_config, role, kv_cache_config)
        self._dump_num_blocks = getattr(kv_cache_config, "num_blocks", None)
        self._dump_caches: dict[str, torch.Tensor] = {}
        self._dump_recv: dict[str, tuple[str, list[int]]] = {}  # decode request id -> (prefill id, ids)
        if role == KVConnectorRole.WORKER and DUMP_DIR:
            worker = self.connector_worker
            real = worker.get_transfer_results

            def get_transfer_results():
                results = real()
                self._dump_finished(
                    results.finished_sending, results.finished_recving - results.failed_recving
                )
                return results

            worker.get_transfer_results = get_transfer_results

    # ---------------------------------------------------------------- worker side
    def register_kv_caches(self, kv_caches):
        self._dump_caches = dict(kv_caches)
        super().register_kv_caches(kv_caches)

    def start_load_kv(self, forward_context, **kwargs) -> None:
        super().start_load_kv(forward_context, **kwargs)
        if DUMP_DIR:
            for req_id, meta in self._connector_metadata.reqs_to_recv.items():
                if meta.remote is not None:
                    ids = _flat(meta.local_physical_block_ids or meta.local_block_ids)
                    self._dump_recv[req_id] = (meta.remote.request_id, ids)

    def _kernel_ids(self, logical: list[int]) -> list[int]:
        worker = self.connector_worker
        ratio = getattr(worker, "_physical_blocks_per_logical_kv_block", 1)
        if ratio == 1:
            return logical
        return _flat(worker._logical_to_kernel_block_ids((logical,), ratio))

    def _save(self, name: str, ids: list[int]) -> None:
        worker = self.connector_worker
        blocks, dim = {}, None
        for layer, cache in self._dump_caches.items():
            dims = [i for i, n in enumerate(cache.shape) if n == self._dump_num_blocks]
            dim = dims[0] if dims else 0
            blocks[layer] = cache.index_select(dim, torch.tensor(ids, dtype=torch.long)).clone().cpu()
        layout = None
        if worker.backend_name == "CPU_ATTN" and blocks:
            c2 = next(iter(blocks.values())).movedim(dim, 0).shape[-1]
            isa, k, v = nixl_cpu.cpu_layout(worker.block_size, c2 // 2, worker.model_config.dtype,
                                            worker.vllm_config.cache_config.cache_dtype)  # fmt: skip
            layout = {"isa": isa, "k": k, "v": v}
        path = Path(DUMP_DIR) / f"{name}.tp{worker.tp_rank}.pt"
        torch.save({"blocks": blocks, "block_ids": ids, "block_dim": dim, "tp_rank": worker.tp_rank,
                    "tp_size": worker.world_size, "total_kv_heads": worker.model_config.get_total_num_kv_heads(),
                    "attn_backend": worker.backend_name, "block_size": worker.block_size, "layout": layout}, path)  # fmt: skip
        path.with_suffix(".done").touch()
        logger.info("pdpair.evidence.kv_dump: %d blocks -> %s", len(ids), path)

    def _dump_finished(self, sending: set[str], recving: set[str]) -> None:
        for req_id in sending:
            meta = Path(DUMP_DIR) / f"prefill-{req_id}.json"
            if meta.is_file():
                self._save(f"prefill-{req_id}", self._kernel_ids(json.loads(meta.read_text())["block_ids"]))
        for req_id in recving:
            if req_id in self._dump_recv:
                remote_id, ids = self._dump_recv.pop(req_id)
                self._save(f"decode-{remote_id}", ids)

    # ------------------------------------------------------------- scheduler side
    def request_finished(self, request, block_ids):
        out = super().request_finished(request, block_ids)
        self._note_blocks(request, block_ids, out)
        return out

    def request_finished_all_groups(self, request, block_ids):
        out = super().request_finished_all_groups(request, block_ids)
        self._note_blocks(request, block_ids, out)
        return out

    def _note_blocks(self, request, block_ids, out) -> None:
        delay_free, params = out
        if DUMP_DIR and delay_free and params:
            record = {"block_ids": _flat(block_ids), "num_prompt_tokens": request.num_prompt_tokens}
            (Path(DUMP_DIR) / f"prefill-{request.request_id}.json").write_text(json.dumps(record))


class NixlPullConnector(NixlConnector):
    """The same, under vLLM's explicit name (a spec saying ``connector: NixlPullConnector``)."""

"""CPU fixes for vLLM 0.32's NixlConnector, loaded by vLLM through ``kv_connector_module_path``.

    --kv-transfer-config '{"kv_connector": "NixlConnector", "kv_connector_module_path": "pdpair.pair.nixl_cpu",
                           "kv_role": "kv_producer", "kv_buffer_device": "cpu"}'

in the venv where pdpair is installed (every vLLM process imports this module: the API server and the
EngineCore for the scheduler side, the worker for the worker side). ``pdpair.pair.runner`` sets the config.

The class is called ``NixlConnector`` on purpose: vLLM's string checks
(``kv_transfer_config.has_connector("NixlConnector")``) must still see a NIXL P/D setup. It is the stock
pull connector plus two CPU-only fixes, applied only while the connector WORKER is being built; nothing
installed is edited.

1. nixl 1.5.1's ``nixl_agent.__init__`` (``nixl_cu13/_api.py``) hard-codes ``pthrDelay = 0`` in the agent
   config, so the UCX progress thread polls with a zero timeout and burns a whole core, even idle. While
   the worker builds its agent we swap the ``nixlBind`` global that ``nixl_agent.__init__`` reads for a
   proxy whose ``nixlAgent(name, cfg)`` sets ``cfg.pthrDelay`` (``PD_NIXL_PTHR_DELAY_US``, default 1000)
   and, with ``PD_NIXL_PROG_THREAD=0``, ``cfg.useProgThread = False``; the original is restored after.
2. ``NixlBaseConnectorWorker.__init__`` moves the worker's (only) compute thread to the LAST core of each
   NUMA node on CPU, next to the other instance. We restore the thread's affinity afterwards
   (``PD_NIXL_KEEP_AFFINITY=0`` turns that off). The runner also re-pins every thread of the instance.

Measured on a 2-core machine (idle worker CPU): stock 86-96 % of a core, with this module 2-3 %.
"""

from __future__ import annotations

import contextlib
import os

from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.distributed.kv_transfer.kv_connector.v1.nixl import connector as _stock
from vllm.logger import init_logger

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


def _build_worker(init, self, vllm_config, role, kv_cache_config) -> None:
    if role != KVConnectorRole.WORKER:
        init(self, vllm_config, role, kv_cache_config)
        return
    saved = os.sched_getaffinity(0)
    with _patched_nixl_agent():
        init(self, vllm_config, role, kv_cache_config)
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

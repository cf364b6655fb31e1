"""vLLM 0.32's block-size receive step on CPU, and the lab's fix, with vLLM's own kernels (ungraded, ``vllm``
tier, no server: a few seconds). The report: ``docs/block-size-bug.md``.

Prefill's blocks are written by vLLM's CPU cache writer (``_custom_ops.cpu_attn_reshape_and_cache``, the op
CPU attention calls for every new token) at block size 32; the bytes NIXL would leave in a decode block of 64
are laid out as NIXL does (decode block chunk j = prefill block j's raw bytes); then vLLM's receive step
(``kv_postprocess_blksize_on_receive`` plus its tail zeroing), or the lab's, runs, and the result is compared
with what vLLM's writer itself puts in a block of 64 (what decode's attention kernel reads).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")

from pdpair.evidence import oracle  # noqa: E402
from pdpair.pair.fixes import region_keys  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.ungraded]
H, C, N_P, RATIO = 4, 64, 32, 2
N_D = N_P * RATIO
BF16 = torch.bfloat16


def _write(isa):
    from vllm import _custom_ops as ops

    return lambda k, v, kc, vc, slots: ops.cpu_attn_reshape_and_cache(k, v, kc, vc, slots, isa)


def _cache(isa: str, block: int, key, value, nblocks: int):
    """vLLM's writer filling a [blocks, heads, block, 2C] cache with tokens 0..T-1 (slots 0..T-1)."""
    cache = torch.zeros(nblocks, H, 2 * block, C, dtype=BF16)
    kc, vc = cache.chunk(2, dim=2)
    _write(isa)(key, value, kc, vc, torch.arange(key.shape[0]))
    return cache.view(nblocks, H, block, 2 * C)


def _received(prefill, n_decode_blocks: int):
    dec = torch.full((n_decode_blocks, H, N_D, 2 * C), 7.0, dtype=BF16)  # stale bytes where nothing arrives
    chunks = dec.view(n_decode_blocks, RATIO, -1)
    for j in range(prefill.shape[0]):
        chunks[j // RATIO, j % RATIO] = prefill[j].reshape(-1)
    return dec


def _dump(blocks, isa, block):
    k, v = region_keys(_write(isa), block, C, BF16)
    return {"blocks": {"layer": blocks}, "block_dim": 0, "tp_rank": 0, "tp_size": 1, "total_kv_heads": H,
            "attn_backend": "CPU_ATTN", "block_size": block, "layout": {"isa": isa, "k": k, "v": v}}  # fmt: skip


def _kv(n_tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_tokens, H, C, generator=g).to(BF16), torch.randn(n_tokens, H, C, generator=g).to(
        BF16
    )


def test_the_vec_writer_keeps_k_dim_major_and_v_token_major():
    """Measured with the installed op: ``vec`` K region [head_dim, N], V region [N, head_dim]; ``amx``
    another order again. A token-row regroup is right for neither."""
    k, v = region_keys(_write("vec"), N_P, C, BF16)
    pos = torch.arange(N_P * C)
    assert torch.equal(k, (pos % N_P) * C + pos // N_P) and torch.equal(v, pos)
    ak, av = region_keys(_write("amx"), N_P, C, BF16)
    assert not torch.equal(ak, k) and not torch.equal(av, v)


def _stock(dec, n_prefill_blocks: int):
    """vLLM 0.32's receive step on decode's blocks: the regroup and the tail zeroing of
    ``post_process_device_kv_on_receive`` (distributed/kv_transfer/kv_connector/v1/nixl/base_worker.py)."""
    from vllm.distributed.kv_transfer.kv_connector.utils import kv_postprocess_blksize_on_receive

    kv_postprocess_blksize_on_receive(dec, torch.arange(dec.shape[0]), RATIO)
    covered, rest = divmod(n_prefill_blocks, RATIO)
    if rest:
        dec[covered, :, rest * (N_D // RATIO) :].zero_()  # "tokens on dim 2": not on CPU_ATTN
    return dec


def _fixed(dec, n_prefill_blocks: int, isa: str):
    """The lab's receive step, as vLLM calls it (``pdpair.pair.nixl_cpu._cpu_post_process``) on a worker
    with just the attributes it reads."""
    from pdpair.pair import nixl_cpu

    nixl_cpu.cpu_layout.cache_clear()
    worker = SimpleNamespace(
        backend_name="CPU_ATTN", use_mla=False, enable_permute_local_kv=False,
        enable_heterogeneous_attn_post_process=False, device_kv_caches={"layer": dec},
        kv_cache_config=SimpleNamespace(transfer_groups=[SimpleNamespace(layer_names=["layer"])]),
        model_config=SimpleNamespace(dtype=BF16), vllm_config=SimpleNamespace(cache_config=SimpleNamespace(cache_dtype="auto")),
    )  # fmt: skip
    import vllm.v1.attention.backends.cpu_attn as cpu_attn  # the ISA comes from vLLM's chooser: pinned here

    chooser = cpu_attn._get_attn_isa
    cpu_attn._get_attn_isa = lambda *a, **k: isa
    try:
        nixl_cpu._cpu_post_process(worker, RATIO, [(0, list(range(dec.shape[0])), n_prefill_blocks)], True)
    finally:
        cpu_attn._get_attn_isa = chooser
        nixl_cpu.cpu_layout.cache_clear()
    return dec


@pytest.mark.parametrize("isa", ["vec", "amx"])
@pytest.mark.parametrize("n_tokens", [64, 20, 100, 1500])
def test_vllms_receive_step_permutes_cpu_kv_and_the_fix_does_not(isa, n_tokens):
    key, value = _kv(n_tokens, n_tokens)
    n_p = math.ceil(n_tokens / N_P)
    n_d = math.ceil(n_tokens / N_D)
    prefill = _cache(isa, N_P, key, value, n_p)
    want = _dump(_cache(isa, N_D, key, value, n_d), isa, N_D)
    source = [_dump(prefill, isa, N_P)]
    assert oracle.compare_kv(source, [want], n_tokens).equal is True, "vLLM's writer at 32 and at 64 agree"
    stock = oracle.compare_kv(
        source, [{**want, "blocks": {"layer": _stock(_received(prefill, n_d), n_p)}}], n_tokens
    )
    assert stock.equal is False, f"{isa}, {n_tokens} tokens: vLLM's own receive step left the KV intact?"
    fixed = oracle.compare_kv(
        source, [{**want, "blocks": {"layer": _fixed(_received(prefill, n_d), n_p, isa)}}], n_tokens
    )
    assert fixed.equal is True, f"{isa}, {n_tokens} tokens: {fixed.detail}"


def test_on_a_token_major_gpu_layout_vllms_receive_step_is_right():
    """The same regroup on FlashAttention's layout (each row a token's [K | V]): correct. By simulation of
    the layout (no GPU here): vLLM's rule ``decode block = k x prefill block`` holds for that layout."""
    n_tokens = 100
    key, value = _kv(n_tokens)
    rows = torch.cat([key, value], dim=-1).permute(1, 0, 2)  # [H, T, 2C]

    def blocks(block):
        nb = math.ceil(n_tokens / block)
        padded = torch.zeros(H, nb * block, 2 * C, dtype=BF16)
        padded[:, :n_tokens] = rows
        return padded.reshape(H, nb, block, 2 * C).permute(1, 0, 2, 3).contiguous()

    prefill = blocks(N_P)
    n_d = math.ceil(n_tokens / N_D)
    dec = _stock(_received(prefill, n_d), prefill.shape[0])
    meta = {
        "block_dim": 0,
        "tp_rank": 0,
        "tp_size": 1,
        "total_kv_heads": H,
        "attn_backend": "FLASH_ATTN",
        "layout": None,
    }
    kv = oracle.compare_kv(
        [{**meta, "blocks": {"layer": prefill}}], [{**meta, "blocks": {"layer": dec}}], n_tokens
    )
    assert kv.equal is True, kv.detail

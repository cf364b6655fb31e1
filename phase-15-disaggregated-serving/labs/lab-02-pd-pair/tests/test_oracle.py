"""The output oracle's decisions on crafted evidence (ungraded: given support code; CPU only, no vLLM).

``pdpair.evidence.oracle`` decides whether a P/D handoff changed the output: (a) the KV bits decode pulled
against prefill's, per KV head, in token order; (b) at the first token that differs from colocated, the
colocated logits must be a near-tie (``TIE_ULPS`` ulps); (c) float32 runs where (b) cannot decide. Each
branch is shown deciding both ways here, on a deliberately broken transfer: a flipped byte in one pulled
block is caught; a near-tie divergence is not flagged. The KV layouts are vLLM 0.32's: CPU_ATTN keeps each
head's K region then its V region in a block, each in its ISA's order (here ``vec``'s, as measured with
vLLM's own writer in test_block_size_fix.py: K ``[head_dim, N]``, V ``[N, head_dim]``, and an arbitrary
permutation, as ``amx``'s tiles are), GPU backends one ``[K | V]`` row per token.
"""

from __future__ import annotations

import math

import pytest
import torch

from pdpair.evidence import oracle
from pdpair.evidence.identity import logit_shifts, row_map
from pdpair.pair.fixes import regroup_cpu_blocks, source_index, zero_cpu_tail

pytestmark = pytest.mark.ungraded
H, C, LAYERS = 4, 8, 2  # KV heads, head size, layers of the crafted caches


# ------------------------------------------------------------------------------------------- part (b)


def _ref(ids, tops):
    return oracle.Reference.of(ids, tops)


def test_identical_tokens_are_same_whatever_the_logits():
    v = oracle.judge(_ref([5, 6, 7], None), [5, 6, 7])
    assert (v.outcome, v.branch, v.ok) == (oracle.SAME, "tokens", True)


def test_a_near_tie_divergence_is_rounding_drift_not_corruption():
    # position 1: colocated chose 6 (logit 9.0) over 8 (9.0 - 1 ulp; ulp at 9.0 in bf16 = 2**-4)
    tops = [{5: 9.5, 1: 9.0}, {6: 9.0, 8: 9.0 - 2**-4, 3: 7.0}, {7: 8.0, 2: 7.5}]
    v = oracle.judge(_ref([5, 6, 7], tops), [5, 8, 1])
    assert (v.outcome, v.branch, v.diff_at, v.gap_ulps, v.ok) == (oracle.DRIFT, "near_tie", 1, 1.0, True)
    exact_tie = oracle.judge(_ref([5, 6], [{5: 1.0}, {6: 9.0, 8: 9.0}]), [5, 8])
    assert exact_tie.outcome == oracle.DRIFT and exact_tie.gap_ulps == 0.0


def test_a_clear_gap_at_the_first_difference_is_corruption():
    tops = [{5: 9.5, 1: 9.0}, {6: 9.0, 8: 8.0, 3: 7.0}]  # 1.0 apart = 16 ulps of 9.0
    v = oracle.judge(_ref([5, 6], tops), [5, 8])
    assert (v.outcome, v.branch, v.gap_ulps, v.ok) == (oracle.CORRUPTION, "logit_gap", 16.0, False)
    assert (
        oracle.judge(_ref([5, 6], tops), [5, 8], tie_ulps=16).outcome == oracle.DRIFT
    )  # the threshold decides


def test_only_the_first_difference_counts():
    # after the first (near-tie) difference the contexts differ: later tokens may be anything
    tops = [{5: 9.0, 9: 9.0 - 2**-4}, {6: 9.0, 8: 1.0}]
    assert oracle.judge(_ref([5, 6], tops), [9, 1234]).outcome == oracle.DRIFT


def test_a_token_outside_the_top_k_is_corruption_when_the_k_th_is_already_far():
    tops = [{6: 9.0, 8: 8.5, 3: 7.0}]  # the k-th is 32 ulps below: the P/D token 4 is further still
    v = oracle.judge(_ref([6], tops), [4])
    assert (v.outcome, v.branch, v.gap_ulps) == (oracle.CORRUPTION, "logit_gap", 32.0)


def test_float32_decides_where_the_logits_cannot():
    flat = [{6: 9.0, 8: 9.0, 3: 9.0}]  # top-3 all tied: a token outside it might be tied too
    v = oracle.judge(_ref([6], flat), [4])
    assert (v.outcome, v.branch, v.ok) == (oracle.UNDECIDED, "none", False)
    no_logits = oracle.judge(_ref([6, 7], None), [6, 9])
    assert no_logits.outcome == oracle.UNDECIDED
    same32 = (oracle.Reference.of([1, 2, 3], dtype="float32"), [1, 2, 3])
    diff32 = (oracle.Reference.of([1, 2, 3], dtype="float32"), [1, 2, 9])
    assert oracle.judge(_ref([6], flat), [4], float32=same32).outcome == oracle.DRIFT
    v = oracle.judge(_ref([6, 7], None), [6, 9], float32=diff32)
    assert (v.outcome, v.branch) == (oracle.CORRUPTION, "float32")
    bad_kv32 = oracle.KvCheck(False, "layer 0 head 1 K from token 3")
    assert (
        oracle.judge(_ref([6], flat), [4], float32=same32, float32_kv=bad_kv32).outcome == oracle.CORRUPTION
    )


def test_a_shorter_output_is_corruption_and_the_kv_verdict_wins_over_tokens():
    assert oracle.judge(_ref([1, 2, 3], None), [1, 2]).outcome == oracle.CORRUPTION
    bad = oracle.KvCheck(False, "layer.0 head 2 V (decode rank 0) from token 40")
    v = oracle.judge(_ref([1, 2], None), [1, 2], kv=bad)
    assert (v.outcome, v.branch, v.kv_equal) == (oracle.CORRUPTION, "kv", False)
    good = oracle.KvCheck(True, "ok")
    assert oracle.judge(_ref([1, 2], None), [1, 2], kv=good).as_dict()["kv_equal"] is True


def test_check_raises_with_both_outputs():
    tops = [{6: 9.0, 8: 8.0}]
    with pytest.raises(
        AssertionError, match=r"corruption.*logit_gap[\s\S]*colocated \[6\][\s\S]*P/D       \[8\]"
    ):
        oracle.check(_ref([6], tops), [8], "probe")
    assert oracle.check(_ref([6], [{6: 9.0, 8: 9.0}]), [8]).outcome == oracle.DRIFT


def test_worst_orders_corruption_undecided_drift_same():
    vs = [oracle.Verdict(o, "tokens", "") for o in (oracle.SAME, oracle.DRIFT, oracle.UNDECIDED)]
    assert oracle.worst(vs).outcome == oracle.UNDECIDED
    assert oracle.worst([*vs, oracle.Verdict(oracle.CORRUPTION, "kv", "")]).outcome == oracle.CORRUPTION
    assert oracle.worst([]) is None


def test_ulp_per_dtype():
    assert oracle.ulp(6.0) == 2**-5 and oracle.ulp(-9.0) == 2**-4 and oracle.ulp(8.0) == 2**-4
    assert oracle.ulp(6.0, "float32") == 2**-21 and oracle.ulp(6.0, "float16") == 2**-8
    assert oracle.ulp(0.0) > 0


def test_references_parse_vllm_answers_json_and_sse():
    lp = {"tokens": ["token_id:8670", "token_id:4683"], "token_logprobs": [9.0, 8.0],
          "top_logprobs": [{"token_id:8670": 9.0, "token_id:7405": 8.9375}, {"token_id:4683": 8.0}]}  # fmt: skip
    body = {"choices": [{"token_ids": [8670, 4683], "logprobs": lp}]}
    ref = oracle.reference_from_answer(body)
    assert ref.ids == (8670, 4683) and ref.top[0] == {8670: 9.0, 7405: 8.9375}
    events = [{"choices": [{"token_ids": [8670], "logprobs": {**lp, "top_logprobs": lp["top_logprobs"][:1]}}]},
              {"choices": [{"token_ids": [4683], "logprobs": {**lp, "top_logprobs": lp["top_logprobs"][1:]}}]}]  # fmt: skip
    assert oracle.reference_from_answer(events=events) == ref
    assert oracle.reference_from_answer({"choices": [{"token_ids": [1, 2]}]}).top is None
    assert oracle.Reference.from_dict(ref.as_dict()) == ref and oracle.Reference.from_dict([1, 2]).ids == (
        1,
        2,
    )
    assert oracle.with_logits({"a": 1}) == {
        "a": 1,
        "logprobs": oracle.TOP_K,
        "return_tokens_as_token_ids": True,
    }


def test_logit_shifts_measure_how_far_rounding_moved_differences():
    ref = _ref([5, 6], [{5: 9.0, 1: 8.5}, {6: 9.0, 8: 9.0 - 2**-4}])
    other = _ref([5, 8], [{5: 9.0, 1: 8.5 + 2**-3}, {6: 9.0, 8: 9.0}])
    s = logit_shifts(ref, other)
    assert (
        s["diff_at"] == 1
        and s["shift_max_ulps"] == 2.0
        and s["ref_gap_ulps"] == 1.0
        and s["other_gap_ulps"] == 0.0
    )


# ------------------------------------------------------------------------------------------- part (a)


def _tokens(n_tokens: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {f"layers.{i}": (torch.randn(H, n_tokens, C, generator=g).to(torch.bfloat16),
                            torch.randn(H, n_tokens, C, generator=g).to(torch.bfloat16)) for i in range(LAYERS)}  # fmt: skip


def vec_layout(block: int, c: int = C) -> dict:
    """vLLM 0.32's ``vec`` ISA: K region ``[head_dim, N]`` (column-major tokens), V region ``[N, head_dim]``."""
    pos = torch.arange(block * c)
    return {"isa": "vec", "k": (pos % block) * c + pos // block, "v": pos}


def shuffled_layout(block: int, c: int = C, seed: int = 1) -> dict:
    """Any other writer order (``amx`` packs tiles): a fixed random permutation per block size."""
    g = torch.Generator().manual_seed(seed * 1000 + block)
    return {
        "isa": "other",
        "k": torch.randperm(block * c, generator=g),
        "v": torch.randperm(block * c, generator=g),
    }


def _cpu_blocks(k, v, block: int, layout=None):
    """CPU_ATTN blocks [nb, heads, block, 2C]: per head, a K region then a V region in ``layout``'s order."""
    layout = layout or vec_layout(block)
    h, t, c = k.shape
    nb = math.ceil(t / block)
    region = torch.zeros(nb, h, 2, block * c, dtype=k.dtype)
    for x, (kv, keys) in enumerate(((k, layout["k"]), (v, layout["v"]))):
        padded = torch.zeros(h, nb * block, c, dtype=k.dtype)
        padded[:, :t] = kv
        tokens = padded.reshape(h, nb, block * c).permute(1, 0, 2)  # [nb, h, token-major]
        region[:, :, x] = tokens[..., keys]
    return region.reshape(nb, h, block, 2 * c)


def _gpu_blocks(k, v, block: int):
    """Token-major blocks [nb, heads, block, 2C]: each token row is [K_t | V_t]."""
    h, t, c = k.shape
    nb = math.ceil(t / block)
    rows = torch.zeros(h, nb * block, 2 * c, dtype=k.dtype)
    rows[:, :t] = torch.cat([k, v], dim=-1)
    return rows.reshape(h, nb, block, 2 * c).permute(1, 0, 2, 3).contiguous()


def _dumps(tokens, block, tp=1, backend="CPU_ATTN", total=H, layout=None):
    layout = (layout or vec_layout(block)) if backend == "CPU_ATTN" else None
    out = []
    for rank in range(tp):
        heads = oracle.heads_of_rank(rank, tp, total)
        blocks = {layer: (_cpu_blocks(k[heads], v[heads], block, layout) if layout else _gpu_blocks(k[heads], v[heads], block))
                  for layer, (k, v) in tokens.items()}  # fmt: skip
        out.append({"blocks": blocks, "block_dim": 0, "tp_rank": rank, "tp_size": tp, "total_kv_heads": total,
                    "attn_backend": backend, "block_size": block, "layout": layout})  # fmt: skip
    return out


@pytest.mark.parametrize("layout", ["vec", "shuffled", "token-major"])
def test_token_rows_invert_every_layout(layout):
    (k, v), block = _tokens(70)["layers.0"], 32
    if layout == "token-major":
        k2, v2 = oracle.token_rows(_gpu_blocks(k, v, block), "FLASH_ATTN")
    else:
        lay = vec_layout(block) if layout == "vec" else shuffled_layout(block)
        k2, v2 = oracle.token_rows(_cpu_blocks(k, v, block, lay), "CPU_ATTN", lay)
    assert torch.equal(k2[:, :70], k) and torch.equal(v2[:, :70], v) and k2.shape == (H, 96, C)
    with pytest.raises(ValueError, match="layout"):
        oracle.token_rows(_cpu_blocks(k, v, block), "CPU_ATTN")


@pytest.mark.parametrize("n", [100, 64, 20])
def test_equal_kv_passes_across_block_sizes_and_tp(n):
    tokens = _tokens(n)
    p = _dumps(tokens, 32)
    for d in (_dumps(tokens, 32), _dumps(tokens, 64), _dumps(tokens, 32, tp=2), _dumps(tokens, 64, tp=4)):
        kv = oracle.compare_kv(p, d, n)
        assert kv.equal is True, kv.detail
        assert (kv.layers, kv.heads, kv.tokens) == (LAYERS, H, n)
    assert oracle.compare_kv(_dumps(tokens, 32, tp=2), _dumps(tokens, 64), n).equal is True


def test_a_flipped_byte_in_one_pulled_block_is_caught():
    n = 100
    tokens = _tokens(n)
    p, d = _dumps(tokens, 32), _dumps(tokens, 32)
    raw = d[0]["blocks"]["layers.1"].view(torch.uint8)  # block 2 (tokens 64-95), head 3, V of token 70
    block2 = raw[2].reshape(H, 2, 32, C * 2)  # vec: V region row-major [token, dim], 2 bytes per bf16
    block2[3, 1, 6, 5] ^= 0x01
    kv = oracle.compare_kv(p, d, n)
    assert kv.equal is False and kv.bad == ("layers.1 head 3 V (decode rank 0) from token 70",), kv.bad
    v = oracle.judge(_ref([1, 2], None), [1, 2], kv=kv)
    assert (v.outcome, v.branch) == (oracle.CORRUPTION, "kv"), "identical tokens do not excuse corrupt KV"


def test_slots_beyond_the_prompt_are_not_compared_and_missing_heads_fail():
    n = 40
    tokens = _tokens(n)
    p, d = _dumps(tokens, 32), _dumps(tokens, 32)
    d[0]["blocks"]["layers.0"][1, :, 20:] = 7  # token slots 40+ of block 1: never written by prefill
    assert oracle.compare_kv(p, d, n).equal is True
    half = _dumps(tokens, 32, tp=2)[:1]  # decode rank 1's heads absent
    assert oracle.compare_kv(p, half, n).equal is False
    assert oracle.compare_kv(p, d, 200).equal is False  # more tokens than either side holds


def test_replicated_heads_must_match_on_every_rank():
    tokens = {layer: (k[:1], v[:1]) for layer, (k, v) in _tokens(50).items()}  # one KV head
    p = _dumps(tokens, 32, total=1)
    d = _dumps(tokens, 32, tp=2, total=1)  # decode TP 2 > 1 head: both ranks hold head 0
    assert [x["tp_rank"] for x in d] == [0, 1] and oracle.compare_kv(p, d, 50).equal is True
    d[1]["blocks"]["layers.0"][0, 0, 3, 0] += 1
    kv = oracle.compare_kv(p, d, 50)
    assert kv.equal is False and "decode rank 1" in kv.detail


# ----------------------------------------------------------------- the CPU block-size fix, byte by byte


def _received(prefill_blocks, ratio: int, n_remote: int):
    """What NIXL leaves in decode's cache: decode block b's byte chunk j = the raw bytes of prefill block
    b*ratio+j (vLLM 0.32 nixl/base_worker.py ``_build_fa_local``: remote-block-sized local descriptors);
    chunks past the last prefill block keep stale bytes (here 99)."""
    nb_d = math.ceil(n_remote / ratio)
    _, h, n, c2 = prefill_blocks.shape
    dec = torch.full((nb_d + 1, h, n * ratio, c2), 99, dtype=prefill_blocks.dtype)  # +1: an untouched block
    chunks = dec.view(nb_d + 1, ratio, h * n * c2)
    for j in range(n_remote):
        chunks[j // ratio, j % ratio] = prefill_blocks[j].reshape(-1)
    return dec, nb_d


@pytest.mark.parametrize("maker", [vec_layout, shuffled_layout])
@pytest.mark.parametrize("n", [64, 20, 100, 128, 33])
def test_the_cpu_fix_regroups_and_zeroes_to_bit_identical_kv(n, maker):
    ratio, block = 2, 32
    small, big = maker(block), maker(block * ratio)
    tokens = _tokens(n)
    p = _dumps(tokens, block, layout=small)
    src_k = source_index(big["k"], small["k"], ratio, C)
    src_v = source_index(big["v"], small["v"], ratio, C)
    for layer in tokens:
        pre = p[0]["blocks"][layer]
        dec, nb_d = _received(pre, ratio, pre.shape[0])
        untouched = dec[nb_d].clone()
        regroup_cpu_blocks(dec, torch.arange(nb_d), ratio, src_k, src_v)
        covered, rest = divmod(pre.shape[0], ratio)
        if rest:
            zero_cpu_tail(dec, covered, rest * block, big["k"], big["v"])
        k, v = oracle.token_rows(dec[:nb_d], "CPU_ATTN", big)
        want_k, want_v = tokens[layer]
        assert torch.equal(k[:, :n], want_k) and torch.equal(v[:, :n], want_v), layer
        if rest:  # the unreceived half of the last block: zero in K AND V
            assert not k[:, covered * 64 + rest * block : (covered + 1) * 64].any()
            assert not v[:, covered * 64 + rest * block : (covered + 1) * 64].any()
        assert torch.equal(dec[nb_d], untouched), "a block outside the request is never touched"


def test_a_token_row_regroup_is_wrong_for_the_cpu_layout():
    """What vLLM 0.32's own receive step does (whole [N, 2C] rows regrouped as if each were a token's
    [K | V]), applied to CPU_ATTN blocks: decode's K region gets prefill's V (the bug)."""
    ratio, block, n = 2, 32, 64
    tokens = _tokens(n)
    pre = _dumps(tokens, block)[0]["blocks"]["layers.0"]
    dec, nb_d = _received(pre, ratio, 2)
    b, h, big, c2 = dec[:nb_d].shape
    dec[:nb_d] = dec[:nb_d].reshape(b, ratio, h, block, c2).permute(0, 2, 1, 3, 4).reshape(b, h, big, c2)
    dumps = [{**_dumps(tokens, 64)[0], "blocks": {"layers.0": dec[:nb_d]}}]
    kv = oracle.compare_kv([{**_dumps(tokens, block)[0], "blocks": {"layers.0": pre}}], dumps, n)
    assert kv.equal is False and "K" in kv.detail


def test_row_map_names_where_permuted_rows_came_from():
    tokens = _tokens(64)
    k, v = tokens["layers.0"]
    swapped = {
        "K": torch.cat([k[0, :32], v[0, :32]]),
        "V": torch.cat([k[0, 32:], torch.zeros(32, C, dtype=k.dtype)]),
    }
    runs = row_map({"K": k[0], "V": v[0]}, swapped, 64)
    assert runs == ["K t0-31 = prefill K t0-31", "K t32-63 = prefill V t0-31", "V t0-31 = prefill K t32-63",
                    "V t32-63 = zeros"], runs  # fmt: skip


def test_heads_of_rank_split_then_replicate_as_vllm_does():
    assert [oracle.heads_of_rank(r, 2, 4) for r in range(2)] == [[0, 1], [2, 3]]
    assert [oracle.heads_of_rank(r, 4, 2) for r in range(4)] == [[0], [0], [1], [1]]  # vLLM: rank * K // tp
    tokens = {layer: (k[:2], v[:2]) for layer, (k, v) in _tokens(40).items()}  # two KV heads, decode TP 4
    assert oracle.compare_kv(_dumps(tokens, 32, total=2), _dumps(tokens, 32, tp=4, total=2), 40).equal is True


def test_the_kv_is_compared_as_bits_not_values():
    n = 32
    tokens = _tokens(n)
    k, v = tokens["layers.0"]
    k[0, 0, 0] = 0.0
    p = _dumps(tokens, 32)
    k[0, 0, 0] = -0.0  # equal as a value, not as bits
    assert oracle.compare_kv(p, _dumps(tokens, 32), n).equal is False

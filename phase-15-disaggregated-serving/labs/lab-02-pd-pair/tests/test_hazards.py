"""lab-02 task 2, graded: ``find_hazards`` judged by what the real pair did (``pytest -m lab02_task2``).

The compatibility matrix (``captures/compat-matrix/matrix.json``, recorded by ``make matrix`` on a real
vLLM 0.32 CPU pair; read ``MATRIX.md``) changed one setting of ``pair.cpu.yaml`` per row and recorded the
outcome. Your ``find_hazards`` runs over every row's spec: a row that ``works`` must yield no hazard (a
false alarm stops a good deployment), a row that broke must yield exactly the hazard(s) the matrix names
for it. The crafted pairs below pin the rules the matrix cannot run here (two hosts, TP, the spellings of
one host or one dtype), each with the vLLM 0.32 source that decides it.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest

from pdpair.evidence.matrix import MATRIX_JSON, ROWS_BY_NAME, load_matrix, row_spec
from pdpair.pair.spec import ModelShape, load_pair_spec, with_side

LAB = Path(__file__).resolve().parents[1]  # the lab folder
CPU_YAML = LAB / "pair.cpu.yaml"
TINY = ModelShape(num_hidden_layers=12, num_key_value_heads=4, head_dim=64)
MATRIX = load_matrix(MATRIX_JSON)
RECORDED = {r["name"]: r for r in MATRIX["rows"]}


def _names(hazards) -> list[str]:
    names = [h.name for h in hazards]
    assert len(names) == len(set(names)), f"each hazard name at most once, got {names}"
    return names


def _expected(name: str) -> list[str]:
    return sorted(ROWS_BY_NAME[name].hazards)


@pytest.mark.lab02_task2
@pytest.mark.parametrize("name", list(RECORDED))
def test_find_hazards_agrees_with_the_recorded_matrix(impl, name):
    rec = RECORDED[name]
    spec = row_spec(ROWS_BY_NAME[name])
    before = copy.deepcopy(spec)
    names = _names(impl.find_hazards(spec.prefill, spec.decode))
    assert spec == before, "find_hazards must not modify its inputs"
    outcome = rec.get("outcome") or f"not run here ({rec.get('cannot_run')})"
    evidence = "; ".join(rec.get("evidence", [])[:2])
    if rec.get("outcome") == "works":
        assert names == [], (
            f"matrix row {name!r} ({rec['change']}): the real pair WORKS, so a pre-launch check must stay "
            f"silent; find_hazards said {names}")  # fmt: skip
    else:
        assert sorted(names) == _expected(name), (
            f"matrix row {name!r} ({rec['change']}): the real pair gave {outcome} [{evidence}]; find_hazards "
            f"must name exactly {_expected(name)}, it said {sorted(names)}")  # fmt: skip


def good_pair():
    spec = load_pair_spec(CPU_YAML)
    return with_side(with_side(spec, "prefill", shape=TINY), "decode", shape=TINY)


def _apply(spec, changes):
    for side, fields in changes:
        spec = with_side(spec, side, **fields)
    return spec


# Rules no CPU machine can run, or spellings the matrix does not enumerate; each from vLLM 0.32 source.
CUDA = {"device": "cuda", "kv_buffer_device": "cuda", "cpu_cores": None, "cpu_kvcache_space_gib": None,
        "cuda_devices": "0"}  # fmt: skip
BOTH_CUDA = [("prefill", CUDA), ("decode", CUDA)]
FIX = {"kv_connector_module_path": "pdpair.pair.nixl_cpu"}  # CPU_BLOCK_FIX_MODULES (solution.py)
GOOD_VARIANTS = {
    # vllm/config/model.py _STR_DTYPE_TO_TORCH_DTYPE: half and float16 are one torch dtype, and the
    # NIXL hash (kv_connector/v1/nixl/metadata.py) hashes the resolved str(model_config.dtype)
    "dtype_spelled_half_and_float16": [("prefill", {"dtype": "half"}), ("decode", {"dtype": "float16"})],
    "dtype_spelled_float_and_float32": [("prefill", {"dtype": "float"}), ("decode", {"dtype": "float32"})],
    # vllm/model_executor/model_loader/weight_utils.py: initialize_single_dummy_weight(..., seed=1234)
    "dummy_weights_other_seed": [("prefill", {"load_format": "dummy", "seed": 0}), ("decode", {"load_format": "dummy", "seed": 7})],
    # kv_connector/utils.py TransferTopology.tp_ratio: either side may be the larger when one divides the other
    "tp_divides": [("prefill", {"tensor_parallel_size": 1}), ("decode", {"tensor_parallel_size": 2})],
    "tp_prefill_larger_divides": [("prefill", {"tensor_parallel_size": 4}), ("decode", {"tensor_parallel_size": 2})],
    # base_worker.py refuses replicated heads only when prefill TP > decode TP (tp_ratio < 0): 8 and 8 read 1:1
    "tp_equal_above_the_kv_heads": [("prefill", {"tensor_parallel_size": 8}), ("decode", {"tensor_parallel_size": 8})],
    # the replicated-heads assert reads DECODE's KV-head count (kv_connector/utils.py is_kv_replicated:
    # remote TP > the local total_num_kv_heads): decode's shape unknown, the rule cannot be judged
    "prefill_tp_8_decode_4_decode_shape_unknown": [("prefill", {"tensor_parallel_size": 8}),
                                                   ("decode", {"tensor_parallel_size": 4, "shape": None})],
    "decode_tp_above_the_kv_heads": [("prefill", {"tensor_parallel_size": 2}), ("decode", {"tensor_parallel_size": 8})],
    "same_ports_other_hosts": [
        ("prefill", {"host": "10.0.0.1", "side_channel_host": "10.0.0.1", "side_channel_port": 5600, "port": 8100}),
        ("decode", {"host": "10.0.0.2", "side_channel_host": "10.0.0.2", "side_channel_port": 5600, "port": 8100}),
    ],
    # the lab's own comment: NixlConnector is the pull connector (kv_connector/factory.py registers both)
    "nixl_and_nixl_pull_are_one_family": [("prefill", {"connector": "NixlConnector"}), ("decode", {"connector": "NixlPullConnector"})],
    # prefill never loads KV: its failure policy never runs (v1/core/sched/scheduler.py, KV load failures)
    "recompute_on_prefill_only": [("prefill", {"kv_load_failure_policy": "recompute"})],
    # config/kv_transfer.py: kv_both is both a producer and a consumer (deprecated for NIXL, still correct)
    "kv_both_on_cuda": BOTH_CUDA + [("prefill", {"kv_role": "kv_both"}), ("decode", {"kv_role": "kv_both"})],
    # nixl/base_worker.py: decode's block may be a multiple of prefill's (post-processed on receive)
    "cuda_decode_block_a_multiple": BOTH_CUDA + [("prefill", {"block_size": 16}), ("decode", {"block_size": 32})],
    "cpu_decode_block_a_multiple_with_the_fix": [("prefill", {"block_size": 32}), ("decode", {"block_size": 64, **FIX})],
    # vllm/config/cache.py _LAYOUT_COMPAT_ALIASES: HND is LBHNC, NIXL's own choice (nixl/connector.py)
    "kv_layout_hnd_is_the_default": [("prefill", {"env": {"VLLM_KV_CACHE_LAYOUT": "HND"}})],
    # base_worker.py: a LBNHC decode may receive LBHNC with enable_permute_local_kv
    "kv_layout_permuted_on_receive": BOTH_CUDA + [("decode", {"env": {"VLLM_KV_CACHE_LAYOUT": "LBNHC"},
                                                              "kv_transfer_extra": {"enable_permute_local_kv": True}})],
    "same_unhashed_settings_spelled_two_ways": [
        ("prefill", {"extra_args": ["--revision", "abc", "-q", "fp8"], "hf_overrides": {"rope_theta": 5e5}}),
        ("decode", {"extra_args": ["--revision=abc", "--quantization", "fp8"], "hf_overrides": {"rope_theta": 5e5}}),
    ],
    # nixl/base_scheduler.py: side channel = VLLM_NIXL_SIDE_CHANNEL_PORT + data-parallel rank
    "data_parallel_ranges_apart": [("prefill", {"side_channel_port": 5600, "extra_args": ["--data-parallel-size", "2"]}),
                                   ("decode", {"side_channel_port": 5602})],
}  # fmt: skip

BAD_PAIRS = {  # case -> (the one hazard it has, the changes)
    # metadata.py hashes str(cache_config.cache_dtype), the RAW string: fp8 and fp8_e4m3 differ
    "fp8_spellings": ("kv_cache_dtype_mismatch", [("prefill", {"kv_cache_dtype": "fp8"}), ("decode", {"kv_cache_dtype": "fp8_e4m3"})]),
    # metadata.py hashes model_config.model, the whole string
    "same_folder_name_other_path": ("model_mismatch", [("prefill", {"model": "/srv/a/tiny-llama"}), ("decode", {"model": "/srv/b/tiny-llama"})]),
    # one host written three ways: the second bind of one port fails whatever the spelling
    "side_channel_one_host_two_spellings": ("side_channel_port_clash", [("prefill", {"host": "localhost", "side_channel_port": 5600}),
                                                                       ("decode", {"host": "::1", "side_channel_port": 5600})]),
    "side_channel_inside_a_data_parallel_range": ("side_channel_port_clash", [
        ("prefill", {"side_channel_port": 5600, "extra_args": ["--data-parallel-size", "2"]}), ("decode", {"side_channel_port": 5601})]),
    "side_channel_inside_a_dp_range_short_flag": ("side_channel_port_clash", [
        ("prefill", {"side_channel_port": 5601}), ("decode", {"side_channel_port": 5599, "extra_args": ["-dp", "3"]})]),
    "side_channel_on_the_other_sides_http_port": ("side_channel_port_clash", [("prefill", {"side_channel_port": 8200}),
                                                                             ("decode", {"port": 8200})]),
    "http_port_one_host": ("http_port_clash", [("prefill", {"host": "127.0.0.1", "port": 8100}), ("decode", {"host": "localhost", "port": 8100})]),
    # across hosts a loopback side channel on EITHER side is unreachable for the peer (here: decode's)
    "loopback_side_channel_on_decode": ("localhost_side_channel_across_hosts", [
        ("prefill", {"host": "10.0.0.1", "side_channel_host": "10.0.0.1"}), ("decode", {"host": "10.0.0.2", "side_channel_host": "::1"})]),
    "p2p_nccl": ("removed_connector", [("prefill", {"connector": "P2pNcclConnector", "kv_connector_module_path": None})]),
    "kv_ip": ("deprecated_kv_config_keys", [("prefill", {"kv_transfer_extra": {"kv_ip": "10.0.0.1"}})]),
    # the matrix: 32/64 passed the handshake and returned wrong tokens; 16/32 is the same ratio
    "cpu_decode_block_a_multiple_no_fix": ("block_size_mismatch", [("prefill", {"block_size": 16}), ("decode", {"block_size": 32})]),
    # kv_connector/utils.py block_size_ratio: decode's block must be a multiple of prefill's, fix or not
    "cpu_prefill_block_larger_with_the_fix": ("block_size_mismatch", [("prefill", {"block_size": 64, **FIX}), ("decode", {"block_size": 32, **FIX})]),
    "cuda_prefill_block_larger": ("block_size_mismatch", BOTH_CUDA + [("prefill", {"block_size": 32}), ("decode", {"block_size": 16})]),
    # base_worker.py: "Different local/remote block sizes are not supported when P TP > D TP."
    "cuda_unequal_blocks_prefill_tp_larger": ("block_size_mismatch", BOTH_CUDA + [
        ("prefill", {"block_size": 16, "tensor_parallel_size": 2}), ("decode", {"block_size": 32})]),
    # base_worker.py: "Heterogeneous block sizes are not supported with host buffer"
    "cuda_unequal_blocks_host_buffer": ("block_size_mismatch", BOTH_CUDA + [
        ("prefill", {"block_size": 16}), ("decode", {"block_size": 32, "kv_buffer_device": "cpu"})]),
    # kv_connector/factory.py: each name is its own class with its own protocol; NIXL's handshake needs NIXL
    "lmcache_on_decode": ("connector_mismatch", [("decode", {"connector": "LMCacheConnectorV1", "kv_connector_module_path": None})]),
    "head_dim": ("head_size_mismatch", [("decode", {"shape": replace(TINY, head_dim=128)})]),
    # kv_connector/utils.py tp_ratio asserts in both directions
    "tp_2_3": ("tp_not_divisible", [("prefill", {"tensor_parallel_size": 2}), ("decode", {"tensor_parallel_size": 3})]),
    "tp_3_2": ("tp_not_divisible", [("prefill", {"tensor_parallel_size": 3}), ("decode", {"tensor_parallel_size": 2})]),
    # base_worker.py: assert not (tp_ratio < 0 and is_kv_replicated): 8 prefill ranks, 4 KV heads
    "prefill_tp_8_decode_4": ("prefill_tp_replicates_kv_heads", [("prefill", {"tensor_parallel_size": 8}), ("decode", {"tensor_parallel_size": 4})]),
    # ... and only decode's: prefill's shape unknown (no config.json there), decode's 4 KV heads decide
    "prefill_tp_8_decode_4_prefill_shape_unknown": ("prefill_tp_replicates_kv_heads", [
        ("prefill", {"tensor_parallel_size": 8, "shape": None}), ("decode", {"tensor_parallel_size": 4})]),
    # one hazard, both sides: the name once (the explanation may say both)
    "cuda_roles_swapped": ("kv_role_misassigned", BOTH_CUDA + [("prefill", {"kv_role": "kv_consumer"}),
                                                               ("decode", {"kv_role": "kv_producer"})]),
    "loopback_side_channels_on_both_hosts": ("localhost_side_channel_across_hosts", [
        ("prefill", {"host": "10.0.0.1", "side_channel_host": "localhost"}), ("decode", {"host": "10.0.0.2", "side_channel_host": "127.0.0.1"})]),
    "deprecated_keys_on_both_sides": ("deprecated_kv_config_keys", [("prefill", {"kv_transfer_extra": {"kv_rank": 0}}),
                                                                    ("decode", {"kv_transfer_extra": {"kv_rank": 1}})]),
    "removed_connector_on_both_sides": ("removed_connector", [
        ("prefill", {"connector": "P2pNcclConnector", "kv_connector_module_path": None}),
        ("decode", {"connector": "SharedStorageConnector", "kv_connector_module_path": None})]),
    # not in metadata.py's hash, not checked at the handshake: silently another model
    "revision": ("unhashed_setting_mismatch", [("prefill", {"extra_args": ["--revision", "v1"]}), ("decode", {"extra_args": ["--revision", "v2"]})]),
    "quantization_one_side": ("unhashed_setting_mismatch", [("decode", {"extra_args": ["-q", "fp8"]})]),
    "tokenizer": ("unhashed_setting_mismatch", [("decode", {"extra_args": ["--tokenizer=/srv/other-tokenizer"]})]),
    "rope_override": ("unhashed_setting_mismatch", [("decode", {"hf_overrides": {"rope_theta": 1e6}})]),
    # base_worker.py: "Heterogeneous TP expects same kv_cache_layout"; NHD is LBNHC
    "kv_layout_nhd_on_decode": ("kv_layout_mismatch", BOTH_CUDA + [("decode", {"env": {"VLLM_KV_CACHE_LAYOUT": "NHD"}})]),
    "kv_layout_permute_the_wrong_way": ("kv_layout_mismatch", BOTH_CUDA + [
        ("prefill", {"env": {"VLLM_KV_CACHE_LAYOUT": "LBNHC"}}), ("decode", {"kv_transfer_extra": {"enable_permute_local_kv": True}})]),
    # scheduler.py defer_block_free (consumers) and kv_connector/v1/base.py requires_kv_delivery (producers)
    "cuda_prefill_kv_consumer": ("kv_role_misassigned", BOTH_CUDA + [("prefill", {"kv_role": "kv_consumer"})]),
    "cuda_decode_kv_producer": ("kv_role_misassigned", BOTH_CUDA + [("decode", {"kv_role": "kv_producer"})]),
    "max_model_len_prefill_shorter": ("max_model_len_mismatch", [("prefill", {"max_model_len": 1024})]),
    "max_model_len_decode_shorter": ("max_model_len_mismatch", [("decode", {"max_model_len": 1024})]),
}  # fmt: skip


@pytest.mark.lab02_task2
@pytest.mark.parametrize("variant", list(GOOD_VARIANTS))
def test_a_good_pair_has_no_hazards(impl, variant):
    spec = _apply(good_pair(), GOOD_VARIANTS[variant])
    before = copy.deepcopy(spec)
    hazards = impl.find_hazards(spec.prefill, spec.decode)
    assert hazards == [], f"{variant}: a working pair must yield no hazards, got {[h.name for h in hazards]}"
    assert spec == before, "find_hazards must not modify its inputs"


@pytest.mark.lab02_task2
@pytest.mark.parametrize("case", list(BAD_PAIRS))
def test_each_hazard_is_named_on_a_crafted_pair(impl, case):
    hazard, changes = BAD_PAIRS[case]
    spec = _apply(good_pair(), changes)
    hazards = impl.find_hazards(spec.prefill, spec.decode)
    names = _names(hazards)
    assert names == [hazard], (
        f"{case}: this pair has exactly one problem, {hazard!r}; find_hazards said {names}"
    )
    (h,) = hazards
    assert h.explanation.strip() and "\n" not in h.explanation, (
        f"{hazard}: the explanation must be one non-empty line, got {h.explanation!r}")  # fmt: skip


PRECEDENCE = {  # case -> (exactly these hazards, the changes): the docstring's precedence rules
    # the removed side never starts: no connector comparison
    "removed_beside_another_family": (["removed_connector"], [
        ("prefill", {"connector": "SharedStorageConnector", "kv_connector_module_path": None}),
        ("decode", {"connector": "LMCacheConnectorV1", "kv_connector_module_path": None})]),
    # tp_ratio's assert runs first: nothing TP-dependent is judged after it
    "tp_not_divisible_hides_replicated_heads": (["tp_not_divisible"], [("prefill", {"tensor_parallel_size": 6}),
                                                                       ("decode", {"tensor_parallel_size": 4})]),
    "tp_not_divisible_hides_the_tp_block_clause": (["tp_not_divisible"], [
        ("prefill", {"tensor_parallel_size": 3, "block_size": 32}), ("decode", {"tensor_parallel_size": 2, "block_size": 64, **FIX})]),
}  # fmt: skip


@pytest.mark.lab02_task2
@pytest.mark.parametrize("case", list(PRECEDENCE))
def test_precedence_as_the_docstring_states_it(impl, case):
    want, changes = PRECEDENCE[case]
    spec = _apply(good_pair(), changes)
    names = _names(impl.find_hazards(spec.prefill, spec.decode))
    assert sorted(names) == sorted(want), (
        f"{case}: want exactly {want} (see find_hazards' precedence), got {names}"
    )


@pytest.mark.lab02_task2
def test_several_hazards_at_once_and_inputs_untouched(impl):
    spec = good_pair()
    rows = (
        "block_size_64_32",
        "dtype_bf16_vs_fp32",
        "side_channel_port_clash",
        "policy_recompute_prefill_killed",
    )
    for name in rows:
        for side, fields in ROWS_BY_NAME[name].sides.items():
            value = {k: (getattr(spec.prefill, k) if v == "@prefill" else v) for k, v in fields.items()}
            spec = with_side(spec, side, **value)
    before = copy.deepcopy(spec)
    names = _names(impl.find_hazards(spec.prefill, spec.decode))
    want = sorted(h for name in rows for h in ROWS_BY_NAME[name].hazards)
    assert sorted(names) == want, f"four broken settings at once: want {want}, got {sorted(names)}"
    assert spec == before, "find_hazards must not modify its inputs"


@pytest.mark.lab02_task2
def test_unknown_shapes_are_not_compared(impl):
    spec = good_pair()
    spec = with_side(spec, "decode", shape=None)
    spec = with_side(spec, "prefill", shape=replace(TINY, num_hidden_layers=2))
    names = _names(impl.find_hazards(spec.prefill, spec.decode))
    assert names == [], f"with one shape unknown (no config.json), shapes cannot be compared; got {names}"

"""Lab 01 spec: a KV handoff nobody can observe. Run one task with `pytest -m lab01_task2`.

The oracle is the never-moved run: the same prompt and sampling params alone on a fresh engine. The
model is batch-invariant by construction (minivllm/model.py), so a request's tokens do not depend on
its neighbours, its block size or where its K/V lives; any difference after a move is a handoff bug.
The tasks build on each other: task 2's tests export with your task 1, task 3 uses both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from minivllm import (
    Engine,
    ModelConfig,
    OutOfBlocksError,
    RequestSnapshot,
    RequestStatus,
    SamplingParams,
    SnapshotError,
    TinyDecoder,
    geometry_fingerprint,
)
from minivllm.testing import (
    CONFIG,
    GREEDY,
    NEIGHBOUR_PARAMS,
    PARAMS,
    SAMPLED,
    assert_unchanged,
    check_pool,
    engine_state,
    fragment,
    kv_at,
    logical_kv,
    make_engine,
    make_prompt,
    reference_output,
    start,
    step,
)

task1 = pytest.mark.lab01_task1
task2 = pytest.mark.lab01_task2
task3 = pytest.mark.lab01_task3
task4 = pytest.mark.lab01_task4

# Graded properties skip hypothesis's shrink phase: a failing example is reported as drawn (its draws
# labelled), at once; shrinking one against a buggy implementation can take minutes.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


def snapshot_copy(snap: RequestSnapshot) -> tuple:
    """A deep copy of a snapshot's contents, to prove later that nobody modified it."""
    return (
        snap.request_id,
        snap.prompt_token_ids,
        snap.output_token_ids,
        snap.num_computed_tokens,
        snap.sampling_params,
        snap.generator_state.clone(),
        snap.kv.clone(),
        snap.geometry,
    )


def assert_snapshot_unmodified(copy: tuple, snap: RequestSnapshot, what: str) -> None:
    now = snapshot_copy(snap)
    same = [
        a == b
        if not isinstance(a, torch.Tensor)
        else a.shape == b.shape
        and a.dtype == b.dtype
        and bool((a == b).logical_or(a.isnan() & b.isnan()).all())
        for a, b in zip(copy, now, strict=True)
    ]
    fields = ["request_id", "prompt", "output", "computed", "params", "generator_state", "kv", "geometry"]
    changed = [f for f, ok in zip(fields, same, strict=True) if not ok]
    assert not changed, f"{what} modified the snapshot it was given: {changed} changed"


# ---------------------------------------------------------------- task 1: export_request
@task1
def test_export_alone_returns_source_to_empty(impl):
    src = make_engine()
    rid, _ = start(src, 10, GREEDY, 3)
    impl.export_request(src, rid)
    assert src.usage == 0.0, f"the only request left: source usage must be back to 0.0, got {src.usage}"
    assert rid not in src.requests, f"{rid} must be gone from the source's requests"
    assert all(r.request_id != rid for r in [*src.running, *src.waiting]), f"{rid} still queued on the source"
    assert sorted(src.block_pool.free_block_ids) == list(range(src.num_blocks)), (
        "every block must be free again"
    )
    check_pool(src)


@task1
def test_export_frees_exactly_its_blocks_and_spares_neighbours(impl):
    src = make_engine()
    fragment(src)
    neighbour = src.add_request(make_prompt(9, salt=3), NEIGHBOUR_PARAMS[1])
    rid, _ = start(src, 13, SAMPLED, 2)
    neighbour_table = list(src.requests[neighbour].block_table)
    neighbour_kv = logical_kv(src, neighbour)
    impl.export_request(src, rid)
    check_pool(src)
    want = len(neighbour_table) / src.num_blocks
    assert src.usage == want, f"source usage must fall back to the neighbour's share {want}, got {src.usage}"
    assert src.requests[neighbour].block_table == neighbour_table, (
        "export must not touch another request's blocks"
    )
    assert all(torch.equal(a, b) for a, b in zip(neighbour_kv, logical_kv(src, neighbour), strict=True)), (
        "export must not touch another request's K/V"
    )
    out = src.run_until_done()[neighbour]
    assert out == reference_output(make_prompt(9, salt=3), NEIGHBOUR_PARAMS[1]), (
        "the neighbour's output changed"
    )


@task1
@pytest.mark.parametrize("prompt_len, steps", [(11, 1), (12, 1), (13, 4), (9, 4), (1, 2)])
def test_snapshot_is_the_transferable_identity(impl, prompt_len, steps):
    src = make_engine(block_size=4)
    fragment(src)  # physical block order != logical order
    rid, prompt = start(src, prompt_len, SAMPLED, steps)
    request = src.requests[rid]
    want_kv = logical_kv(src, rid)
    want_gen = request.generator.get_state()
    want_out = list(request.output_token_ids)
    snap = impl.export_request(src, rid)
    assert isinstance(snap, RequestSnapshot), (
        f"export_request must return a RequestSnapshot, got {type(snap)}"
    )
    assert snap.request_id == rid and list(snap.prompt_token_ids) == prompt, (
        "the snapshot must keep id and prompt"
    )
    assert list(snap.output_token_ids) == want_out, (
        f"output tokens: want {want_out}, got {snap.output_token_ids}"
    )
    kinds = (type(snap.prompt_token_ids).__name__, type(snap.output_token_ids).__name__)
    assert kinds == ("tuple", "tuple"), (
        f"the snapshot's tokens are tuples (the docstring's format), got {kinds}: a list handed over as it is "
        "is the request's own, and whoever holds the request can still change the snapshot through it"
    )
    n = prompt_len + steps - 1
    assert snap.num_computed_tokens == n, (
        f"a running request has computed every token but the last sampled one: want {n}, got {snap.num_computed_tokens}"
    )
    assert snap.sampling_params == SAMPLED, "the sampling params must travel"
    assert torch.equal(snap.generator_state, want_gen), (
        "the generator state must be the request's, as it is now"
    )
    assert snap.geometry == geometry_fingerprint(CONFIG), (
        "the snapshot must carry the source's geometry fingerprint"
    )
    shape = (n, CONFIG.num_layers, 2, CONFIG.num_kv_heads, CONFIG.head_dim)
    assert tuple(snap.kv.shape) == shape, (
        f"kv must be [tokens, layers, 2, kv_heads, head_dim] = {shape}, got {tuple(snap.kv.shape)}"
    )
    src.kv_cache.kv.fill_(float("nan"))  # the freed blocks get reused: the snapshot must own its data
    wrong = [p for p in range(n) if not torch.equal(snap.kv[p], want_kv[p])]
    assert not wrong, f"kv must hold the K/V of every position in logical order; wrong at positions {wrong}"


@task1
def test_a_freed_block_is_someone_elses_at_once(impl):
    """Once a block is back on the free list, another request may write into it at once (in vLLM the
    scheduler hands it out in the same step). Here every block is overwritten the moment it is freed:
    the snapshot must still hold the request's K/V."""
    src = make_engine(4)
    fragment(src)
    rid, _ = start(src, 13, SAMPLED, 3)
    want = logical_kv(src, rid)
    pool, real_free = src.block_pool, src.block_pool.free

    def free_and_reuse(block_ids):
        block_ids = list(block_ids)
        real_free(block_ids)
        src.kv_cache.kv[torch.tensor(block_ids, dtype=torch.long)] = float("nan")  # a newcomer's K/V

    pool.free = free_and_reuse
    snap = impl.export_request(src, rid)
    del pool.free
    assert src.usage == 0.0, f"every block freed, usage {src.usage}"
    wrong = [p for p in range(len(want)) if not torch.equal(snap.kv[p], want[p])]
    assert not wrong, (
        f"the snapshot's K/V at positions {wrong} is what a newcomer wrote into the freed blocks: the K/V "
        "must be taken while the blocks are still the request's"
    )


@task1
def test_the_snapshot_names_this_handoff_and_its_epoch(impl):
    """A snapshot carries the request's epoch as it leaves (an export does not move it on: the import
    does) and a fresh snapshot id, new for every export, even of the same request."""
    a, b = make_engine(4), make_engine(8)
    rid, _ = start(a, 9, SAMPLED, 2)
    first = impl.export_request(a, rid)
    assert first.epoch == 0 and first.snapshot_id, (
        f"a request that never moved leaves at epoch 0, got {first.epoch}"
    )
    impl.import_request(b, first)  # one move: epoch 1 on b
    b.step()
    second = impl.export_request(b, rid)
    assert second.epoch == 1, f"after one move the request leaves at epoch 1, got {second.epoch}"
    assert second.snapshot_id != first.snapshot_id and second.snapshot_id != rid, (
        f"every export gets a fresh snapshot id (new_snapshot_id): {first.snapshot_id!r}, {second.snapshot_id!r}"
    )
    assert second.kv.dtype == CONFIG.dtype, "the K/V keeps the model's dtype"


@task1
def test_a_request_without_a_generator_ships_no_generator_state(impl):
    """A counter-sampled request has no generator (greedy here, so no task-8 draw is needed): its
    snapshot carries generator_state=None, not a state made up from its seed."""
    src = make_engine(4)
    counter = dataclasses.replace(GREEDY, rng="counter")
    rid, _ = start(src, 9, counter, 2)
    assert src.requests[rid].generator is None, "setup: an rng='counter' request has no generator"
    snap = impl.export_request(src, rid)
    assert snap.generator_state is None, f"no generator, no state to ship: got {type(snap.generator_state)}"


@task1
def test_two_snapshots_do_not_share_memory(impl):
    src = make_engine(4)
    first, _ = start(src, 11, SAMPLED, 2)
    second = src.add_request(make_prompt(13, salt=5), NEIGHBOUR_PARAMS[1])
    step(src, 2)
    want_first, want_second = logical_kv(src, first), logical_kv(src, second)
    snap_first = impl.export_request(src, first)
    snap_second = impl.export_request(src, second)
    for name, snap, want in (("first", snap_first, want_first), ("second", snap_second, want_second)):
        wrong = [p for p in range(len(want)) if not torch.equal(snap.kv[p], want[p])]
        assert not wrong, (
            f"after two exports the {name} snapshot's kv is wrong at positions {wrong}: each snapshot must "
            "own its K/V (a staging buffer reused across exports overwrites the earlier snapshot)"
        )
    assert src.usage == 0.0, f"both exported: source usage must be 0.0, got {src.usage}"


@task1
def test_export_rejects_unknown_and_waiting_requests(impl):
    src = make_engine()
    rid = src.add_request(make_prompt(5), GREEDY)  # waiting: never stepped, no KV yet
    before = engine_state(src)
    with pytest.raises(KeyError):
        impl.export_request(src, "no-such-request")
    with pytest.raises(ValueError):
        impl.export_request(src, rid)
    assert_unchanged(before, engine_state(src), "a rejected export")


# ---------------------------------------------------------------- task 2: import_request
@task2
@pytest.mark.parametrize("dst_block_size", [1, 3, 4, 8])
def test_import_bills_the_destination_exactly(impl, dst_block_size):
    src, dst = make_engine(4), make_engine(dst_block_size)
    dst.add_request(make_prompt(6, salt=2), NEIGHBOUR_PARAMS[0])
    step(dst, 2)
    rid, _ = start(src, 10, GREEDY, 3)
    snap = impl.export_request(src, rid)
    used_before, free_before = dst.block_pool.num_used, set(dst.block_pool.free_block_ids)
    impl.import_request(dst, snap)
    n = snap.num_computed_tokens
    want = math.ceil((n + 1) / dst_block_size)
    assert dst.block_pool.num_used - used_before == want, (
        f"{n} tokens of K/V plus room for the next token, in blocks of {dst_block_size}, must cost "
        f"{want} blocks, cost {dst.block_pool.num_used - used_before}"
    )
    request = dst.requests[rid]
    assert request.status == RequestStatus.RUNNING and request in dst.running, (
        "an import is admitted as running"
    )
    assert request.num_computed_tokens == n, (
        f"prepaid compute: {n} tokens computed, got {request.num_computed_tokens}"
    )
    assert set(request.block_table) <= free_before, (
        f"the imported request may only use blocks that were free: {request.block_table} vs free {sorted(free_before)}"
    )
    check_pool(dst)


@task2
@pytest.mark.parametrize("dst_block_size", [1, 3, 4, 8])
def test_contents_survive_not_block_ids(impl, dst_block_size):
    src, dst = make_engine(4), make_engine(dst_block_size)
    fragment(src)
    fragment(dst)
    other = dst.add_request(make_prompt(7, salt=4), NEIGHBOUR_PARAMS[2])  # occupies dst blocks
    step(dst, 1)
    other_kv = logical_kv(dst, other)
    rid, _ = start(src, 14, SAMPLED, 3)
    src_table, want_kv = list(src.requests[rid].block_table), logical_kv(src, rid)
    snap = impl.export_request(src, rid)
    impl.import_request(dst, snap)
    dst_table = dst.requests[rid].block_table
    wrong = [p for p in range(len(want_kv)) if not torch.equal(kv_at(dst, dst_table, p), want_kv[p])]
    assert not wrong, (
        f"K/V must be identical at every logical position (src blocks {src_table} of 4 -> dst blocks "
        f"{dst_table} of {dst_block_size}); wrong at positions {wrong}"
    )
    assert all(torch.equal(a, b) for a, b in zip(other_kv, logical_kv(dst, other), strict=True)), (
        "the import overwrote another request's K/V on the destination"
    )
    check_pool(dst)


@task2
@pytest.mark.parametrize("kind", ["greedy", "sampled"])
def test_imported_request_decodes_next_and_finishes_as_never_moved(impl, kind):
    params = PARAMS[kind]
    src, dst = make_engine(4), make_engine(2)
    # Moved after 3 steps: a generator restarted from the seed would draw different tokens from here.
    rid, prompt = start(src, 9, params, 3)
    snap = impl.export_request(src, rid)
    copy = snapshot_copy(snap)
    impl.import_request(dst, snap)
    assert torch.equal(dst.requests[rid].generator.get_state(), snap.generator_state), (
        "the imported request's generator must continue from the snapshot's state (set_state), not restart "
        "from the seed: a restarted stream replays the random draws already used on the source"
    )
    before = dst.num_forward_tokens
    dst.step()
    assert dst.num_forward_tokens - before == 1, (
        f"prepaid compute: the first step after an import decodes 1 token, it ran {dst.num_forward_tokens - before}"
    )
    out = dst.run_until_done()[rid]
    want = reference_output(prompt, params)
    assert out == want, (
        f"{kind}: output after the move must equal the never-moved output; want {want}, got {out}"
    )
    assert dst.usage == 0.0, f"finished: destination usage must be back to 0.0, got {dst.usage}"
    assert_snapshot_unmodified(copy, snap, "import_request")


@task2
def test_two_sampled_imports_keep_their_own_random_streams(impl):
    src, dst = make_engine(4), make_engine(4)
    other = SamplingParams(temperature=1.0, top_k=16, max_tokens=6, seed=23)
    first, first_prompt = start(src, 9, SAMPLED, 0)
    second, second_prompt = start(src, 7, other, 0, salt=6)
    step(src, 2)
    snaps = [impl.export_request(src, first), impl.export_request(src, second)]
    for snap in snaps:
        impl.import_request(dst, snap)
    outputs = dst.run_until_done()
    for rid, prompt, params in ((first, first_prompt, SAMPLED), (second, second_prompt, other)):
        want = reference_output(prompt, params)
        assert outputs[rid] == want, (
            f"{rid}: two sampled requests imported into one engine must each keep their own generator "
            f"(a generator shared between requests mixes their random streams); want {want}, got {outputs[rid]}"
        )


@task2
@pytest.mark.parametrize("dst_block_size", [3, 4])
def test_import_that_exactly_fits_succeeds(impl, dst_block_size):
    src = make_engine(4)
    rid, prompt = start(src, 10, GREEDY, 2)  # 11 computed tokens: 4 blocks of 3, 3 blocks of 4
    need = math.ceil(12 / dst_block_size)  # = ceil(11 / block size) here, with room for the next token
    dst = make_engine(dst_block_size, num_blocks=12)
    hog = dst.block_pool.allocate(dst.block_pool.num_free - need)
    snap = impl.export_request(src, rid)
    impl.import_request(dst, snap)  # exactly `need` blocks free: this must fit
    assert dst.block_pool.num_free == 0, (
        f"the import needed all {need} free blocks, {dst.block_pool.num_free} left"
    )
    dst.block_pool.free(hog)
    out = dst.run_until_done()[rid]
    assert out == reference_output(prompt, GREEDY), "an exact fit must finish as never-moved"


class AdmissionRefused(Exception):
    """The failure refuse_admission injects (not a RuntimeError, so a NotImplementedError is not it)."""


@task2
@pytest.mark.parametrize("block_size", [2, 4])
def test_exact_fit_import_never_preempts_itself(impl, block_size):
    # 12 computed tokens fill their last block exactly: the next token needs a new block.
    src = make_engine(4)
    rid, prompt = start(src, 11, GREEDY, 2)
    snap = impl.export_request(src, rid)
    kv_blocks = 12 // block_size
    dst = make_engine(block_size, num_blocks=kv_blocks + 6)
    hog = dst.block_pool.allocate(dst.block_pool.num_free - kv_blocks)  # room for the K/V, none to grow
    before = engine_state(dst)
    with pytest.raises(OutOfBlocksError):
        impl.import_request(dst, snap)  # accepted, it would preempt itself on its first step
    assert_unchanged(before, engine_state(dst), "refusing an import with no headroom")
    dst.block_pool.free(hog[:1])  # one block of headroom
    impl.import_request(dst, snap)
    forward, preemptions = dst.num_forward_tokens, dst.num_preemptions
    dst.step()
    assert (dst.num_forward_tokens - forward, dst.num_preemptions - preemptions) == (1, 0), (
        "with headroom the imported request's first step is a decode of 1 token and preempts nobody; "
        f"got {dst.num_forward_tokens - forward} tokens and {dst.num_preemptions - preemptions} preemptions"
    )
    dst.block_pool.free(hog[1:])
    assert dst.run_until_done()[rid] == reference_output(prompt, GREEDY)


@task2
def test_stale_snapshot_after_a_round_trip_is_refused(impl):
    a, b = make_engine(4), make_engine(8)
    rid, prompt = start(a, 10, SAMPLED, 2)
    first = impl.export_request(a, rid)
    impl.import_request(b, first)  # A -> B
    b.step()
    impl.import_request(a, impl.export_request(b, rid))  # B -> A
    before = engine_state(b)
    with pytest.raises(SnapshotError):
        impl.import_request(b, first)  # the A -> B snapshot again: the request has moved on since
    assert_unchanged(before, engine_state(b), "refusing a stale snapshot")
    with pytest.raises(SnapshotError):
        impl.validate_snapshot(b, first)
    assert a.run_until_done()[rid] == reference_output(prompt, SAMPLED), "A -> B -> A: as never-moved"


@task2
def test_a_snapshot_at_the_latest_epoch_is_not_stale(impl):
    """Only an OLDER epoch is stale: the snapshot that just left may come back (it is what a rollback re-imports)."""
    a = make_engine(4)
    rid, prompt = start(a, 10, SAMPLED, 2)
    snap = impl.export_request(a, rid)
    assert snap.epoch == a.epochs[rid], "setup: the snapshot carries the epoch the source last saw"
    impl.validate_snapshot(a, snap)  # same epoch as seen: not stale (a '<=' comparison refuses it)
    impl.import_request(a, snap)
    assert a.run_until_done()[rid] == reference_output(prompt, SAMPLED), "back home: as never-moved"


def refuse_admission(engine: Engine) -> None:
    """Make ``engine.admit_running`` fail, as a last-moment admission failure no pre-check can foresee."""

    def refuse(request):
        raise AdmissionRefused("admission refused at the last moment (injected by the test)")

    engine.admit_running = refuse


@task2
def test_failure_after_allocation_gives_the_blocks_back(impl):
    src = make_engine(4)
    rid, _ = start(src, 14, SAMPLED, 2)
    dst = make_engine(4)
    fragment(dst)
    dst.add_request(make_prompt(6, salt=5), NEIGHBOUR_PARAMS[1])
    step(dst, 2)
    snap = impl.export_request(src, rid)
    refuse_admission(dst)
    before = engine_state(dst)
    with pytest.raises(AdmissionRefused):
        impl.import_request(dst, snap)
    assert_unchanged(
        before, engine_state(dst), "an import whose admission fails after the blocks were claimed"
    )
    check_pool(dst)


@task2
@pytest.mark.parametrize("free_blocks", [0, 1, 2])
def test_import_without_room_is_loud_and_changes_nothing(impl, free_blocks):
    src = make_engine(4)
    rid, _ = start(src, 14, GREEDY, 2)  # 15 computed tokens = 4 blocks of 4
    dst = make_engine(4, num_blocks=6)
    dst.add_request(make_prompt(5, salt=5), SamplingParams(max_tokens=12))
    step(dst, 1)
    dst.block_pool.allocate(dst.block_pool.num_free - free_blocks)  # squeeze the free list
    snap = impl.export_request(src, rid)
    before = engine_state(dst)
    with pytest.raises(OutOfBlocksError):
        impl.import_request(dst, snap)
    assert_unchanged(before, engine_state(dst), f"an import that needs 4 blocks with {free_blocks} free")


def _tamper(snap: RequestSnapshot, kind: str, position: int = 0) -> RequestSnapshot:
    """A snapshot with one thing wrong (``position`` picks where, for the kinds that have a where)."""

    def poisoned(value: float) -> torch.Tensor:
        kv = snap.kv.clone()
        kv[position % len(kv), -1, 1, 0, 0] = value
        return kv

    tokens = (*snap.prompt_token_ids, *snap.output_token_ids)
    i = position % len(tokens)
    outside = (*tokens[:i], CONFIG.vocab_size, *tokens[i + 1 :])
    params = snap.sampling_params
    changes = {
        "fewer_layers": {"kv": snap.kv[:, :1].clone()},
        "fewer_kv_heads": {"kv": snap.kv[:, :, :, :1].clone()},
        "smaller_head_dim": {"kv": snap.kv[..., : CONFIG.head_dim // 2].clone()},
        "float64_kv": {"kv": snap.kv.double()},
        "truncated_kv": {"kv": snap.kv[:-1].clone()},
        "extra_output_token": {"output_token_ids": (*snap.output_token_ids, 3)},
        "computed_count_off": {"num_computed_tokens": snap.num_computed_tokens - 1},
        "nan_kv": {"kv": poisoned(float("nan"))},
        "inf_kv": {"kv": poisoned(float("inf"))},
        "token_outside_vocab": {
            "prompt_token_ids": outside[: len(snap.prompt_token_ids)],
            "output_token_ids": outside[len(snap.prompt_token_ids) :],
        },
        "finished": {"sampling_params": dataclasses.replace(params, max_tokens=len(snap.output_token_ids))},
        "never_fits": {"sampling_params": dataclasses.replace(params, max_tokens=10_000)},
        "bad_generator_state": {"generator_state": snap.generator_state[:100].clone()},
        "other_weights_claimed": {"geometry": geometry_fingerprint(ModelConfig(seed=1))},
    }[kind]
    return dataclasses.replace(snap, **changes)


TAMPERED = [
    "fewer_layers",
    "fewer_kv_heads",
    "smaller_head_dim",
    "float64_kv",
    "truncated_kv",
    "extra_output_token",
    "computed_count_off",
    "nan_kv",
    "inf_kv",
    "token_outside_vocab",
    "finished",
    "never_fits",
    "bad_generator_state",
    "other_weights_claimed",
]
FOREIGN = {
    "other_layer_count": ModelConfig(num_layers=3),
    "other_kv_heads": ModelConfig(num_kv_heads=1),
    "other_head_dim": ModelConfig(head_dim=16),
    "other_dtype": ModelConfig(dtype=torch.float64),
    "other_weights": ModelConfig(seed=1),
}


def bad_snapshot_case(impl, kind: str) -> tuple[Engine, RequestSnapshot]:
    """A destination with a neighbour, and a snapshot it must refuse for reason ``kind``."""
    if kind in FOREIGN:  # a genuine snapshot, from an engine running another model
        src = make_engine(4, model=TinyDecoder(FOREIGN[kind]))
        rid, _ = start(src, 10, GREEDY, 2)
        snap = impl.export_request(src, rid)
    else:
        src = make_engine(4)
        rid, _ = start(src, 10, SAMPLED, 2)
        snap = impl.export_request(src, rid)
        if kind != "duplicate_id":
            snap = _tamper(snap, kind, position=3)
    dst = make_engine(4)
    dst.add_request(make_prompt(6, salt=6), NEIGHBOUR_PARAMS[0])
    if kind == "duplicate_id":  # the same id already live (waiting) on the destination
        dst.add_request(make_prompt(4, salt=7), GREEDY, request_id=snap.request_id)
    step(dst, 1)
    return dst, snap


BAD_KINDS = [*TAMPERED, *FOREIGN, "duplicate_id"]


@task2
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_snapshot_rejected_and_destination_unchanged(impl, kind):
    dst, snap = bad_snapshot_case(impl, kind)
    before, copy = engine_state(dst), snapshot_copy(snap)
    with pytest.raises(SnapshotError):
        impl.import_request(dst, snap)
    assert_unchanged(before, engine_state(dst), f"rejecting a {kind} snapshot")
    assert_snapshot_unmodified(copy, snap, f"rejecting a {kind} snapshot")
    check_pool(dst)


@task2
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_validate_snapshot_refuses_and_touches_nothing(impl, kind):
    dst, snap = bad_snapshot_case(impl, kind)
    before, copy = engine_state(dst), snapshot_copy(snap)
    with pytest.raises(SnapshotError):
        impl.validate_snapshot(dst, snap)
    assert_unchanged(before, engine_state(dst), f"validate_snapshot on a {kind} snapshot")
    assert_snapshot_unmodified(copy, snap, "validate_snapshot")


@task2
@pytest.mark.parametrize("dst_block_size", [1, 4, 8])
def test_validate_snapshot_accepts_a_good_one_and_touches_nothing(impl, dst_block_size):
    src, dst = make_engine(4), make_engine(dst_block_size)
    rid, _ = start(src, 10, SAMPLED, 3)
    dst.add_request(make_prompt(6, salt=6), NEIGHBOUR_PARAMS[1])
    step(dst, 2)
    snap = impl.export_request(src, rid)
    before, copy = engine_state(dst), snapshot_copy(snap)
    assert impl.validate_snapshot(dst, snap) is None, "validate_snapshot returns None for a good snapshot"
    assert_unchanged(before, engine_state(dst), "validating a good snapshot")
    assert_snapshot_unmodified(copy, snap, "validate_snapshot")
    dst.block_pool.allocate(dst.block_pool.num_free)  # no room now is not a bad snapshot
    assert impl.validate_snapshot(dst, snap) is None, (
        "validate_snapshot does not check free blocks: no room right now is import's OutOfBlocksError"
    )


@task2
@pytest.mark.parametrize("dst_blocks", [3, 5])
def test_request_that_can_never_fit_is_refused_before_allocating(impl, dst_blocks):
    # A 9-token prompt with max_tokens=16 peaks at 9 + 16 - 1 = 24 positions = 6 blocks of 4. Moved
    # after 2 steps it has only 10 tokens of K/V (3 blocks), which a 3- or 5-block engine could hold.
    src = make_engine(4)
    rid, _ = start(src, 9, SamplingParams(max_tokens=16), 2)
    snap = impl.export_request(src, rid)
    dst = make_engine(4, num_blocks=dst_blocks)
    before = engine_state(dst)
    with pytest.raises(SnapshotError):
        impl.import_request(dst, snap)
    assert dst.block_pool.num_used == 0 and not dst.requests, (
        f"a {dst_blocks}-block engine refusing a 6-block request must be left with no used blocks and no "
        f"request, has {dst.block_pool.num_used} used and {sorted(dst.requests)}"
    )
    assert_unchanged(before, engine_state(dst), "refusing a request that can never fit")


@task2
@pytest.mark.parametrize("max_tokens, fits", [(16, True), (17, False)])
def test_the_never_fits_boundary_both_ways(impl, max_tokens, fits):
    """A 9-token prompt with max_tokens=16 peaks at 24 positions (the last sampled token never has K/V):
    6 blocks of 4 exactly, so a 6-block engine can run it to the end; with max_tokens=17 it peaks at 25
    positions, 7 blocks, and validation (not the engine's admission) must refuse it."""
    src = make_engine(4)
    rid, prompt = start(src, 9, SamplingParams(max_tokens=max_tokens), 2)
    snap = impl.export_request(src, rid)
    dst = make_engine(4, num_blocks=6)
    before = engine_state(dst)
    if fits:
        impl.validate_snapshot(dst, snap)
        impl.import_request(dst, snap)
        assert dst.run_until_done()[rid] == reference_output(prompt, SamplingParams(max_tokens=16)), (
            "a request that peaks at exactly the engine's 6 blocks runs to the end there"
        )
        return
    for name, call in (
        ("validate_snapshot", impl.validate_snapshot),
        ("import_request", impl.import_request),
    ):
        try:
            call(dst, snap)
        except SnapshotError:
            pass
        except NotImplementedError:
            raise
        except Exception as exc:  # noqa: BLE001 - the message names what was raised instead
            pytest.fail(
                f"{name}: a request peaking at 25 positions (7 blocks) in a 6-block engine must be refused by "
                f"validation with SnapshotError, got {exc!r} (from the engine's own admission check?)"
            )
        else:
            pytest.fail(f"{name} accepted a request that peaks at 7 blocks into a 6-block engine")
        assert_unchanged(before, engine_state(dst), f"{name} refusing a request that can never fit")


@task2
@pytest.mark.parametrize("case", ["stateful_without_state", "counter_with_a_state"])
def test_a_generator_state_that_does_not_fit_the_sampler_is_refused(impl, case):
    """A stateful request without its generator's state would restart from the seed and replay draws it
    already made; a counter request has no generator to give a state to."""
    src = make_engine(4)
    params = SAMPLED if case == "stateful_without_state" else dataclasses.replace(GREEDY, rng="counter")
    rid, _ = start(src, 9, params, 2)
    snap = impl.export_request(src, rid)
    state = None if case == "stateful_without_state" else torch.Generator().manual_seed(7).get_state()
    bad = dataclasses.replace(snap, generator_state=state)
    dst = make_engine(4)
    before = engine_state(dst)
    for name, call in (
        ("validate_snapshot", impl.validate_snapshot),
        ("import_request", impl.import_request),
    ):
        with pytest.raises(SnapshotError):
            call(dst, bad)
        assert_unchanged(before, engine_state(dst), f"{name} refusing a {case} snapshot")


@task2
def test_a_snapshot_of_a_request_without_a_generator_needs_no_state(impl):
    src, dst = make_engine(4), make_engine(8)
    counter = dataclasses.replace(GREEDY, rng="counter")  # no generator; greedy, so no task-8 draw
    rid, prompt = start(src, 9, counter, 2)
    snap = dataclasses.replace(impl.export_request(src, rid), generator_state=None)
    impl.validate_snapshot(dst, snap)
    impl.import_request(dst, snap)
    assert dst.requests[rid].generator is None, "an imported counter request still has no generator"
    assert dst.run_until_done()[rid] == reference_output(prompt, counter), "moved: as never-moved"


@task2
def test_a_model_in_another_dtype_moves_too(impl):
    """Nothing in the contract is float32: a float64 model's snapshot imports into a float64 engine."""
    model = TinyDecoder(ModelConfig(dtype=torch.float64))
    src, dst = make_engine(4, model=model), make_engine(8, model=model)
    rid, prompt = start(src, 10, SAMPLED, 2)
    snap = impl.export_request(src, rid)
    assert snap.kv.dtype == torch.float64, "task 1: the snapshot's K/V keeps the model's dtype"
    impl.import_request(dst, snap)
    alone = make_engine(16, model=model)
    ref = alone.add_request(prompt, SAMPLED)
    assert dst.run_until_done()[rid] == alone.run_until_done()[ref], "moved: as never-moved"
    with pytest.raises(SnapshotError):
        impl.validate_snapshot(
            dst, dataclasses.replace(snap, kv=snap.kv.float())
        )  # float32 K/V, float64 engine


FAILED_IMPORTS = {
    "no_room": OutOfBlocksError,
    "admission_refused": AdmissionRefused,
    "duplicate_id": SnapshotError,
    **dict.fromkeys(
        [
            "nan_kv",
            "inf_kv",
            "token_outside_vocab",
            "finished",
            "never_fits",
            "bad_generator_state",
            "truncated_kv",
            "float64_kv",
            "other_weights_claimed",
        ],
        SnapshotError,
    ),
}


@task2
@settings(max_examples=30, deadline=None, phases=NO_SHRINK)
@given(
    data=st.data(),
    failure=st.sampled_from(sorted(FAILED_IMPORTS)),
    dst_bs=st.sampled_from([1, 2, 3, 4, 8]),
    prompt_len=st.integers(1, 14),
    moved_after=st.integers(1, 4),
)
def test_any_failed_import_leaves_the_destination_as_it_was(
    impl, data, failure, dst_bs, prompt_len, moved_after
):
    src = make_engine(4)
    rid, _ = start(src, prompt_len, SAMPLED, moved_after)
    snap = impl.export_request(src, rid)
    dst = make_engine(dst_bs)
    fragment(dst)
    for j in range(data.draw(st.integers(0, 2), label="neighbours")):
        dst.add_request(make_prompt(3 + 2 * j, salt=30 + j), NEIGHBOUR_PARAMS[j])
    step(dst, data.draw(st.integers(0, 2), label="destination steps"))
    hog: list[int] = []
    if failure == "no_room":  # one block short of the K/V alone
        hog = dst.block_pool.allocate(
            dst.block_pool.num_free - math.ceil(snap.num_computed_tokens / dst_bs) + 1
        )
    elif failure == "admission_refused":
        refuse_admission(dst)
    elif failure == "duplicate_id":
        dst.add_request(make_prompt(4, salt=7), GREEDY, request_id=snap.request_id)
    else:
        snap = _tamper(snap, failure, position=data.draw(st.integers(0, 40), label="where"))
    before, copy = engine_state(dst), snapshot_copy(snap)
    with pytest.raises(FAILED_IMPORTS[failure]):
        impl.import_request(dst, snap)
    assert_unchanged(before, engine_state(dst), f"a failed import ({failure})")
    assert_snapshot_unmodified(copy, snap, f"a failed import ({failure})")
    dst.block_pool.free(hog)
    check_pool(dst)


@task2
def test_snapshot_imported_twice_is_rejected(impl):
    src, dst = make_engine(4), make_engine(4)
    rid, _ = start(src, 8, GREEDY, 2)
    snap = impl.export_request(src, rid)
    impl.import_request(dst, snap)
    before = engine_state(dst)
    with pytest.raises(SnapshotError):
        impl.import_request(dst, snap)
    assert_unchanged(before, engine_state(dst), "rejecting a duplicate request id")


# ---------------------------------------------------------------- task 3: migrate
BLOCK_SIZES = st.sampled_from([1, 2, 3, 4, 8])


def checked_migrate(impl, src: Engine, dst: Engine, rid: str) -> RequestSnapshot:
    """``impl.migrate``, then name the task at fault when the move broke something an earlier task
    owns: task 3's invisibility rests on task 1's snapshot and task 2's import."""
    request = src.requests[rid]
    want_gen, want_kv = request.generator.get_state(), logical_kv(src, rid)
    snap = impl.migrate(src, dst, rid)
    assert isinstance(snap, RequestSnapshot), f"migrate must return the exported snapshot, got {type(snap)}"
    assert torch.equal(snap.generator_state, want_gen), (
        "task 1: export_request did not capture the generator's current state, so the move replays "
        "random draws (fix task 1 before task 3)"
    )
    assert rid in dst.requests, f"after migrate, {rid} must be live on the destination"
    assert torch.equal(dst.requests[rid].generator.get_state(), want_gen), (
        "task 2: import_request did not restore the generator state from the snapshot, so the moved "
        "request's sampling restarts (fix task 2 before task 3)"
    )
    wrong = [
        p for p, kv in enumerate(want_kv) if not torch.equal(kv_at(dst, dst.requests[rid].block_table, p), kv)
    ]
    assert not wrong, (
        f"task 1 or 2: after the move the K/V differs at logical positions {wrong} (export must gather in "
        "logical order, import must write each position to its own slot): fix those before task 3"
    )
    return snap


def run_migration(
    impl, data, params: SamplingParams, prompt_len: int, src_bs: int, dst_bs: int, round_trip: bool
):
    """Run a target request plus neighbours on two engines, move the target once (or there and
    back), and return every request's (output, reference)."""
    src, dst = make_engine(src_bs), make_engine(dst_bs)
    fragment(src)
    fragment(dst)
    prompt = make_prompt(prompt_len, salt=1)
    target = src.add_request(prompt, params)
    expected = {target: (prompt, params)}
    for engine, salt in ((src, 20), (dst, 30)):
        for j in range(data.draw(st.integers(0, 2), label=f"neighbours (salt {salt})")):
            p, sp = make_prompt(3 + 2 * j, salt + j), NEIGHBOUR_PARAMS[j]
            expected[engine.add_request(p, sp)] = (p, sp)
    moved_after = data.draw(st.integers(1, params.max_tokens - 1), label="moved after steps")
    for _ in range(moved_after):
        src.step()
        dst.step()
    checked_migrate(impl, src, dst, target)
    check_pool(src)
    check_pool(dst)
    if round_trip and not dst.requests[target].is_finished:
        back_after = data.draw(st.integers(0, params.max_tokens - moved_after - 1), label="back after steps")
        for _ in range(back_after):
            src.step()
            dst.step()
        checked_migrate(impl, dst, src, target)
    outputs = {**src.run_until_done(), **dst.run_until_done()}
    assert src.usage == 0.0 and dst.usage == 0.0, (
        f"all finished: usage must be 0.0, got {src.usage}, {dst.usage}"
    )
    return {rid: (outputs.get(rid), reference_output(p, sp)) for rid, (p, sp) in expected.items()}, target


@task3
@pytest.mark.parametrize("kind", ["greedy", "sampled"])
@settings(max_examples=25, phases=NO_SHRINK)
@given(data=st.data(), prompt_len=st.integers(1, 18), src_bs=BLOCK_SIZES, dst_bs=BLOCK_SIZES)
def test_migration_is_output_invisible(impl, kind, data, prompt_len, src_bs, dst_bs):
    results, target = run_migration(impl, data, PARAMS[kind], prompt_len, src_bs, dst_bs, round_trip=False)
    for rid, (got, want) in results.items():
        who = "the migrated request" if rid == target else f"neighbour {rid}"
        assert got == want, (
            f"{kind}, prompt {prompt_len}, blocks {src_bs}->{dst_bs}: {who} must produce the never-moved "
            f"output; want {want}, got {got}"
        )


@task3
@settings(max_examples=15, phases=NO_SHRINK)
@given(data=st.data(), prompt_len=st.integers(1, 14), a_bs=BLOCK_SIZES, b_bs=BLOCK_SIZES)
def test_round_trip_a_to_b_to_a_is_output_invisible(impl, data, prompt_len, a_bs, b_bs):
    results, target = run_migration(impl, data, SAMPLED, prompt_len, a_bs, b_bs, round_trip=True)
    for rid, (got, want) in results.items():
        who = "the round-tripped request" if rid == target else f"neighbour {rid}"
        assert got == want, (
            f"A({a_bs}) -> B({b_bs}) -> A: {who} must match the never-moved output; want {want}, got {got}"
        )


@task3
@pytest.mark.parametrize("block_size", [2, 4])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_migration_at_block_boundaries(impl, block_size, offset):
    # moved after 2 steps: computed tokens = prompt + 1 = a multiple of the block size, +- 1
    prompt_len = 3 * block_size - 1 + offset
    src, dst = make_engine(block_size), make_engine(block_size)
    rid, prompt = start(src, prompt_len, SAMPLED, 2)
    checked_migrate(impl, src, dst, rid)
    out = dst.run_until_done()[rid]
    want = reference_output(prompt, SAMPLED)
    assert out == want, f"{prompt_len + 1} computed tokens, block size {block_size}: want {want}, got {out}"


def _rollback_case(impl, dst: Engine, error: type[Exception], transport=None, match: str | None = None):
    src = make_engine(4)
    neighbour = src.add_request(make_prompt(6, salt=8), NEIGHBOUR_PARAMS[1])
    rid, prompt = start(src, 11, SAMPLED, 3)
    request = src.requests[rid]
    want = (
        list(request.all_token_ids),
        request.num_computed_tokens,
        request.generator.get_state(),
        logical_kv(src, rid),
    )
    usage = src.usage
    dst_before = engine_state(dst)
    kwargs = {} if transport is None else {"transport": transport}
    with pytest.raises(error, match=match):
        impl.migrate(src, dst, rid, **kwargs)
    assert rid in src.requests, f"a failed migrate must leave {rid} on the source"
    request = src.requests[rid]
    assert request.status == RequestStatus.RUNNING, f"restored request must be running, is {request.status}"
    got = (list(request.all_token_ids), request.num_computed_tokens)
    assert got == want[:2], f"restored tokens/progress must be unchanged: want {want[:2]}, got {got}"
    assert torch.equal(request.generator.get_state(), want[2]), "restored generator state must be unchanged"
    assert all(torch.equal(a, b) for a, b in zip(want[3], logical_kv(src, rid), strict=True)), (
        "restored K/V must be unchanged at every logical position (put back what left, not what arrived)"
    )
    assert src.usage == usage, f"source usage must be back to {usage}, got {src.usage}"
    check_pool(src)
    assert_unchanged(dst_before, engine_state(dst), "a failed migrate (destination side)")
    assert rid not in dst.requests, f"a failed migrate must not leave {rid} on the destination"
    outputs = src.run_until_done()
    assert outputs[rid] == reference_output(prompt, SAMPLED), (
        "after rollback the request must finish as never-moved"
    )
    assert outputs[neighbour] == reference_output(make_prompt(6, salt=8), NEIGHBOUR_PARAMS[1]), (
        "neighbour changed"
    )


@task3
def test_failed_migrate_out_of_blocks_rolls_back(impl):
    dst = make_engine(4, num_blocks=5)
    dst.add_request(make_prompt(5, salt=9), SamplingParams(max_tokens=12))
    step(dst, 1)
    dst.block_pool.allocate(dst.block_pool.num_free - 1)  # one free block; the move needs 4
    _rollback_case(impl, dst, OutOfBlocksError)


@task3
def test_failed_migrate_wrong_geometry_rolls_back(impl):
    _rollback_case(impl, make_engine(4, model=TinyDecoder(ModelConfig(num_kv_heads=1))), SnapshotError)


@task3
def test_failed_migrate_wire_error_rolls_back(impl):
    def broken_wire(snapshot):
        raise ConnectionError("link down mid-transfer (injected by the test)")

    _rollback_case(impl, make_engine(4), ConnectionError, transport=broken_wire, match="injected")


@task3
def test_a_cancelled_transfer_rolls_back(impl):
    """The caller gave up mid-transfer: asyncio.CancelledError is a BaseException, not an Exception, and
    the request must not be lost to it."""

    def cancelled_wire(snapshot):
        raise asyncio.CancelledError("the caller cancelled the move mid-transfer (injected by the test)")

    _rollback_case(impl, make_engine(4), asyncio.CancelledError, transport=cancelled_wire, match="injected")


@task3
@pytest.mark.parametrize("then", ["raises", "delivers"])
def test_a_wire_that_writes_into_what_it_is_handed_rolls_back_what_left(impl, then):
    """A wire may use the snapshot it is handed as its buffer (serialize in place, reuse it): here it
    garbles its K/V and generator state, then fails or delivers the garbled thing (which the destination
    refuses). The source gets back what left, not what the wire made of it."""

    def scribbling_wire(snapshot):
        snapshot.kv.fill_(float("nan"))
        snapshot.generator_state.zero_()
        if then == "raises":
            raise ConnectionError("link down after the buffer was reused (injected by the test)")
        return snapshot

    error = ConnectionError if then == "raises" else SnapshotError
    _rollback_case(impl, make_engine(4), error, transport=scribbling_wire)


@task3
@pytest.mark.parametrize("failure", ["refused", "wire"])
def test_a_rollback_fits_on_a_full_source(impl, failure):
    """The request's 12 positions of K/V fill its 3 blocks exactly, and the source has no free block left
    after the export but those 3: putting the request back must fit there whatever else the source
    holds."""
    src = make_engine(4, num_blocks=6)
    rid, prompt = start(src, 11, SAMPLED, 2)  # 12 computed positions in 3 full blocks
    hog = src.block_pool.allocate(src.block_pool.num_free)  # the rest of the source is busy
    request = src.requests[rid]
    want = (list(request.all_token_ids), request.num_computed_tokens, request.generator.get_state())
    want_kv, table = logical_kv(src, rid), list(request.block_table)
    assert (len(table), src.block_pool.num_free) == (3, 0), "setup: 3 full blocks, nothing free"

    def broken_wire(snapshot):
        raise ConnectionError("link down mid-transfer (injected by the test)")

    if failure == "refused":  # another model: the destination refuses the snapshot
        dst, kwargs, error = make_engine(4, model=TinyDecoder(ModelConfig(seed=5))), {}, SnapshotError
    else:
        dst, kwargs, error = make_engine(4), {"transport": broken_wire}, ConnectionError
    try:
        impl.migrate(src, dst, rid, **kwargs)
    except error:
        pass
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - the message names what was raised instead
        pytest.fail(
            f"migrate must re-raise the original {error.__name__}, got {exc!r} (did the rollback fail?)"
        )
    else:
        pytest.fail(f"migrate must re-raise the {error.__name__}, it returned")
    assert rid in src.requests, f"{rid} must be back on the full source: the rollback may not need more room"
    request = src.requests[rid]
    got = (list(request.all_token_ids), request.num_computed_tokens, request.generator.get_state())
    assert got[:2] == want[:2] and torch.equal(got[2], want[2]), "restored: tokens, progress, generator"
    assert all(torch.equal(a, b) for a, b in zip(want_kv, logical_kv(src, rid), strict=True)), (
        "restored K/V must be unchanged at every logical position"
    )
    assert src.block_pool.num_free == 0 and len(request.block_table) == 3, (
        f"the request holds what it held (3 blocks), got {request.block_table}"
    )
    src.block_pool.free(hog)
    check_pool(src)
    assert src.run_until_done()[rid] == reference_output(prompt, SAMPLED), "rolled back: as never-moved"


@task3
def test_failed_migrate_corrupted_in_transit_rolls_back(impl):
    def bit_flipping_wire(snapshot):  # delivers a copy with one poisoned value; the original is intact
        return _tamper(snapshot, "nan_kv", position=5)

    _rollback_case(impl, make_engine(4), SnapshotError, transport=bit_flipping_wire)


@task3
def test_failed_migrate_after_allocation_rolls_back(impl):
    dst = make_engine(4)
    dst.add_request(make_prompt(5, salt=9), NEIGHBOUR_PARAMS[0])
    step(dst, 1)
    refuse_admission(dst)  # fails after the destination claimed blocks: no pre-check can see it coming
    _rollback_case(impl, dst, AdmissionRefused)


@task3
@pytest.mark.parametrize("dst_blocks", [3, 5])
def test_failed_migrate_into_an_engine_too_small_rolls_back(impl, dst_blocks):
    src = make_engine(4)
    rid, prompt = start(src, 9, SamplingParams(max_tokens=16), 2)  # peaks at 6 blocks of 4
    dst = make_engine(4, num_blocks=dst_blocks)
    with pytest.raises(SnapshotError):
        impl.migrate(src, dst, rid)
    assert dst.block_pool.num_used == 0 and not dst.requests, (
        f"the {dst_blocks}-block destination must keep no used blocks and no request, has "
        f"{dst.block_pool.num_used} used and {sorted(dst.requests)}"
    )
    assert rid in src.requests, f"{rid} must be back on the source"
    assert src.run_until_done()[rid] == reference_output(prompt, SamplingParams(max_tokens=16))


@task3
def test_migrate_ships_through_the_transport_and_returns_the_snapshot(impl):
    src, dst = make_engine(4), make_engine(8)
    rid, prompt = start(src, 10, SAMPLED, 3)
    want_kv = logical_kv(src, rid)
    want_state = (src.requests[rid].all_token_ids, src.requests[rid].generator.get_state())
    carried = []

    def recording_wire(snapshot):  # a wire that delivers a faithful copy (under its own label)
        carried.append((snapshot.request_id, snapshot.snapshot_id))
        return dataclasses.replace(
            snapshot,
            kv=snapshot.kv.clone(),
            generator_state=snapshot.generator_state.clone(),
            snapshot_id="relabelled-by-the-wire",
        )

    snap = impl.migrate(src, dst, rid, transport=recording_wire)
    assert [r for r, _ in carried] == [rid], (
        f"migrate must hand the snapshot to the transport once, it did {carried}"
    )
    assert isinstance(snap, RequestSnapshot) and (snap.request_id, snap.snapshot_id) == carried[0], (
        f"migrate must return the snapshot it exported (not what the wire delivered), got {snap!r}"
    )
    assert list(snap.prompt_token_ids + snap.output_token_ids) == want_state[0], "returned snapshot: tokens"
    assert torch.equal(snap.generator_state, want_state[1]), "returned snapshot: generator state"
    assert snap.num_computed_tokens == len(want_kv) and all(
        torch.equal(snap.kv[p], kv) for p, kv in enumerate(want_kv)
    ), "the returned snapshot's kv must be the K/V that left the source"
    assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED)


@task3
def test_a_rollback_moves_the_epoch_on(impl):
    """After a rollback the request is one epoch past the snapshot that failed to land, so that snapshot,
    delivered to the source late or twice, is refused there; the request itself moves on as usual."""
    src, dst = make_engine(4), make_engine(8)
    rid, prompt = start(src, 10, SAMPLED, 2)
    epoch = src.requests[rid].epoch
    sent = []

    def wire_that_loses_the_ack(snapshot):  # the snapshot went out, the sender only sees an error
        sent.append(snapshot)
        raise ConnectionError("no acknowledgement (injected by the test)")

    with pytest.raises(ConnectionError):
        impl.migrate(src, dst, rid, transport=wire_that_loses_the_ack)
    (lost,) = sent
    assert lost.epoch == epoch, f"setup: the snapshot left at the request's epoch {epoch}, has {lost.epoch}"
    got = (src.requests[rid].epoch, src.epochs[rid])
    assert got == (epoch + 1, epoch + 1), (
        "a rollback is an import like any other: (request epoch, source's record) must be one past the "
        f"snapshot that failed to land, {(epoch + 1, epoch + 1)}; got {got}"
    )
    snap = impl.migrate(src, dst, rid)  # the request moves on: its next snapshot is not stale anywhere
    assert (snap.epoch, dst.requests[rid].epoch) == (epoch + 1, epoch + 2), (
        f"the next move leaves at epoch {epoch + 1} and lands at {epoch + 2}, got {(snap.epoch, dst.requests[rid].epoch)}"
    )
    before = engine_state(src)
    with pytest.raises(SnapshotError):
        impl.import_request(src, lost)  # delivered late: it would run the request a second time
    assert_unchanged(before, engine_state(src), "refusing the snapshot a rollback superseded")
    assert rid not in src.requests, "the superseded snapshot must not revive the request on the source"
    assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED), "as never-moved"


# ---------------------------------------------------------------- task 4: recompute and its cost
@task4
@pytest.mark.parametrize("kind", ["greedy", "sampled"])
@settings(max_examples=12, phases=NO_SHRINK)
@given(prompt_len=st.integers(1, 16), moved_after=st.integers(1, 5), src_bs=BLOCK_SIZES, dst_bs=BLOCK_SIZES)
def test_recompute_is_output_invisible(impl, kind, prompt_len, moved_after, src_bs, dst_bs):
    params = PARAMS[kind]
    src, dst = make_engine(src_bs), make_engine(dst_bs)
    rid, prompt = start(src, prompt_len, params, moved_after)
    neighbour = dst.add_request(make_prompt(4, salt=40), NEIGHBOUR_PARAMS[1])
    dst.step()
    snap = impl.export_request(src, rid)
    impl.readmit_by_recompute(dst, snap)
    outputs = dst.run_until_done()
    want = reference_output(prompt, params)
    assert outputs[rid] == want, (
        f"{kind}: recomputed after {moved_after} steps (prompt {prompt_len}) must give the never-moved output; "
        f"want {want}, got {outputs[rid]}"
    )
    assert outputs[neighbour] == reference_output(make_prompt(4, salt=40), NEIGHBOUR_PARAMS[1]), (
        "neighbour changed"
    )


@task4
def test_readmit_queues_without_kv_and_pays_the_prefill_again(impl):
    src, dst = make_engine(4), make_engine(4)
    rid, prompt = start(src, 10, SAMPLED, 3)  # 10 prompt + 3 generated tokens
    snap = impl.export_request(src, rid)
    impl.readmit_by_recompute(dst, snap)
    request = dst.requests[rid]
    assert request.status == RequestStatus.WAITING and request.num_computed_tokens == 0, (
        f"readmitted by recompute = waiting with nothing computed, got {request}"
    )
    assert request.all_token_ids == list(snap.prompt_token_ids + snap.output_token_ids), (
        "the recompute must cover the prompt AND the generated tokens"
    )
    assert dst.usage == 0.0, f"readmission allocates nothing (the scheduler does, later); usage {dst.usage}"
    before = dst.num_forward_tokens
    produced = dst.step()
    assert dst.num_forward_tokens - before == 13, (
        f"the next step recomputes all 13 tokens (10 prompt + 3 generated), ran {dst.num_forward_tokens - before}"
    )
    want = reference_output(prompt, SAMPLED)
    assert produced[rid] == want[3], f"then samples the 4th output token {want[3]}, got {produced[rid]}"


@task4
@pytest.mark.parametrize(
    "case",
    [
        "duplicate_id",
        "other_model",
        "stale",
        "token_outside_vocab",
        "finished",
        "never_fits",
        "bad_generator_state",
    ],
)
def test_readmit_rejects_what_cannot_continue(impl, case):
    """Recompute discards the K/V, so the K/V is no reason to refuse; everything else that validation
    refuses still is (SnapshotError, the engine unchanged), a stale snapshot included."""
    src = make_engine(4)
    rid, _ = start(src, 6, SAMPLED, 2)
    snap = impl.export_request(src, rid)
    dst = make_engine(4)
    if case == "duplicate_id":
        impl.readmit_by_recompute(dst, snap)
    elif case == "other_model":
        dst = make_engine(4, model=TinyDecoder(ModelConfig(seed=3)))
    elif case == "stale":  # the request came here, moved on, and came back: the old snapshot is stale
        impl.import_request(dst, snap)
        dst.step()
        back = make_engine(4)
        impl.import_request(back, impl.export_request(dst, rid))
        back.step()
        impl.import_request(dst, impl.export_request(back, rid))
        dst.run_until_done()
    else:
        snap = _tamper(snap, case, position=2)
    before = engine_state(dst)
    try:
        impl.readmit_by_recompute(dst, snap)
    except SnapshotError:
        pass
    except NotImplementedError:
        raise
    except Exception as exc:  # noqa: BLE001 - the message names what was raised instead
        pytest.fail(f"readmit_by_recompute refusing a {case} snapshot must raise SnapshotError, got {exc!r}")
    else:
        pytest.fail(f"readmit_by_recompute accepted a {case} snapshot")
    assert_unchanged(before, engine_state(dst), f"a rejected readmission ({case})")


@task4
def test_readmit_ignores_the_kv_it_discards(impl):
    src, dst = make_engine(4), make_engine(8)
    rid, prompt = start(src, 9, SAMPLED, 2)
    snap = impl.export_request(src, rid)
    kv = snap.kv.clone()
    kv[3] = float("nan")
    impl.readmit_by_recompute(dst, dataclasses.replace(snap, kv=kv[:5]))  # poisoned and truncated: unread
    assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED)


@task4
def test_two_readmitted_requests_keep_their_own_random_streams(impl):
    """Each readmitted request continues ITS stream: two of them in one engine share no generator."""
    src, dst = make_engine(4), make_engine(4)
    first, first_prompt = start(src, 9, SAMPLED, 0)
    other_params = SamplingParams(temperature=1.0, max_tokens=6, seed=99)
    second, second_prompt = start(src, 7, other_params, 0, salt=3)
    step(src, 2)
    snaps = [impl.export_request(src, rid) for rid in (first, second)]
    for snap in snaps:
        impl.readmit_by_recompute(dst, snap)
    out = dst.run_until_done()
    assert (out[first], out[second]) == (
        reference_output(first_prompt, SAMPLED),
        reference_output(second_prompt, other_params),
    ), "two readmitted requests must each finish as never-moved (a shared generator mixes their draws)"


@task4
def test_a_readmitted_request_is_one_move_further(impl):
    src, dst = make_engine(4), make_engine(4)
    rid, prompt = start(src, 9, SAMPLED, 2)
    snap = impl.export_request(src, rid)
    impl.readmit_by_recompute(dst, snap)
    got = (dst.requests[rid].epoch, dst.epochs[rid])
    assert got == (snap.epoch + 1, snap.epoch + 1), (
        f"(epoch, engine's record) must be snapshot + 1, got {got}"
    )
    dst.step()
    later = impl.export_request(dst, rid)
    assert later.epoch == snap.epoch + 1, "its next move leaves from that epoch"
    impl.import_request(src, later)
    state = engine_state(dst)
    with pytest.raises(SnapshotError):
        impl.readmit_by_recompute(dst, snap)  # the first snapshot again, on an engine that saw it move on
    assert_unchanged(state, engine_state(dst), "refusing a stale readmission")
    assert src.run_until_done()[rid] == reference_output(prompt, SAMPLED)


@task4
def test_recovery_cost_for_a_known_geometry(impl):
    src = make_engine(4)
    rid, _ = start(src, 7, GREEDY, 4)  # 10 computed tokens
    snap = impl.export_request(src, rid)
    cost = impl.recovery_cost(snap, CONFIG, link_gbps=1.0, flops_per_s=1e9)
    assert cost.ship_bytes == 2560, (
        f"ship bytes: the K/V of 10 positions is 2560 bytes, got {cost.ship_bytes}"
    )
    assert cost.recompute_tokens == 10, f"recompute the 10 computed positions, got {cost.recompute_tokens}"
    assert cost.recompute_flops == 382_720, (
        "recompute FLOPs for 10 positions of the lab model: want 382720 (every matrix product of every layer, "
        f"the weights' and attention's, 2 FLOPs per multiply-add), got {cost.recompute_flops}"
    )
    assert cost.ship_s == pytest.approx(2560 * 8 / 1e9), f"2560 B at 1 Gb/s = 20.48 us, got {cost.ship_s}"
    assert cost.recompute_s == pytest.approx(382_720 / 1e9), (
        f"382720 FLOP at 1 GFLOP/s, got {cost.recompute_s}"
    )
    assert cost.cheaper == "ship", f"20 us to ship vs 383 us to recompute: ship wins, got {cost.cheaper!r}"
    slow = impl.recovery_cost(snap, CONFIG, link_gbps=0.001, flops_per_s=1e9)
    assert slow.cheaper == "recompute", (
        f"on a 1 Mb/s link (20 ms) recompute (0.38 ms) wins, got {slow.cheaper!r}"
    )


@task4
def test_recovery_cost_scales_with_dtype_and_context(impl):
    src = make_engine(4)
    rid, _ = start(src, 20, GREEDY, 1)  # 20 computed tokens
    snap = impl.export_request(src, rid)
    wide = ModelConfig(
        hidden_size=64,
        num_layers=3,
        num_heads=8,
        num_kv_heads=2,
        head_dim=8,
        intermediate_size=128,
        dtype=torch.float64,
    )
    cost = impl.recovery_cost(snap, wide, link_gbps=10.0, flops_per_s=1e12)
    assert cost.ship_bytes == 20 * 3 * 2 * 2 * 8 * 8, (
        f"float64 K/V: 20 x 3 x 2 x 2 x 8 x 8 = 15360 B, got {cost.ship_bytes}"
    )
    assert cost.recompute_flops == 4_339_200, f"recompute FLOPs must be 4339200, got {cost.recompute_flops}"
    with pytest.raises(ValueError):
        impl.recovery_cost(snap, CONFIG, link_gbps=0.0, flops_per_s=1e9)


@task4
def test_recovery_cost_tie_goes_to_ship(impl):
    src = make_engine(4)
    rid, _ = start(src, 7, GREEDY, 4)  # 10 computed tokens: 2560 B to ship, 382720 FLOP to recompute
    snap = impl.export_request(src, rid)
    # 2560 B = 20480 bits over 2.048e-5 Gb/s = 1.0 s; 382720 FLOP at 382720 FLOP/s = 1.0 s: a tie
    cost = impl.recovery_cost(snap, CONFIG, link_gbps=2.048e-5, flops_per_s=382_720.0)
    assert cost.ship_s == cost.recompute_s == 1.0, (
        f"both must take 1.0 s, got {cost.ship_s}, {cost.recompute_s}"
    )
    assert cost.cheaper == "ship", f"a tie ships (it redoes no work), got {cost.cheaper!r}"


@task4
@pytest.mark.parametrize(
    "link_gbps, flops_per_s",
    [(0.0, 1e9), (-1.0, 1e9), (float("nan"), 1e9), (1.0, 0.0), (1.0, -1e9), (1.0, float("nan"))],
)
def test_recovery_cost_refuses_rates_that_are_not_positive(impl, link_gbps, flops_per_s):
    src = make_engine(4)
    rid, _ = start(src, 5, GREEDY, 1)
    snap = impl.export_request(src, rid)
    with pytest.raises(ValueError):
        impl.recovery_cost(snap, CONFIG, link_gbps=link_gbps, flops_per_s=flops_per_s)

"""Lab 01 spec, task 7: a transfer that loses some blocks. Run it with `pytest -m lab01_task7`.

The wire corrupts block k of the K/V (in the destination's block size) and reports which blocks failed,
as a transport's per-block checksum would. The import keeps the valid PREFIX and recomputes the rest;
the oracle is still the never-moved run, and the engine's ``num_forward_tokens`` counts the recompute.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from minivllm import (
    Engine,
    OutOfBlocksError,
    RequestStatus,
    SamplingParams,
    SnapshotError,
)
from minivllm.testing import CONFIG, GREEDY, MODEL, PARAMS, SAMPLED, make_prompt, reference_output

task7 = pytest.mark.lab01_task7


def exported(impl, prompt: list[int], params: SamplingParams, steps: int):
    src = Engine(MODEL, 48, 4)
    rid = src.add_request(prompt, params)
    for _ in range(steps):
        src.step()
    return impl.export_request(src, rid)


def corrupt(snapshot, failed: set[int], block_size: int, value: float = 3.0):
    """What a lossy wire delivers: the K/V of the ``failed`` blocks (in ``block_size`` blocks) garbled."""
    kv = snapshot.kv.clone()
    for b in failed:
        kv[b * block_size : (b + 1) * block_size] = value
    return dataclasses.replace(snapshot, kv=kv)


def engine_state(engine: Engine) -> dict:
    held = sorted(b for r in engine.requests.values() for b in r.block_table)
    return {
        "free": sorted(engine.block_pool.free_block_ids),
        "requests": {
            rid: (r.status, r.num_computed_tokens, list(r.block_table)) for rid, r in engine.requests.items()
        },
        "running": [r.request_id for r in engine.running],
        "waiting": [r.request_id for r in engine.waiting],
        "held kv": engine.kv_cache.kv[torch.tensor(held, dtype=torch.long)].clone(),
    }


def assert_unchanged(before: dict, after: dict, what: str) -> None:
    for key in ("free", "requests", "running", "waiting"):
        assert before[key] == after[key], (
            f"{what} must leave the {key} unchanged: {before[key]} -> {after[key]}"
        )
    assert torch.equal(before["held kv"], after["held kv"]), (
        f"{what} must not write into live requests' blocks"
    )


# ---------------------------------------------------------------- task 7: import_with_load_errors
@task7
@pytest.mark.parametrize("kind", ["greedy", "sampled"])
@pytest.mark.parametrize(
    "block_size, failed", [(4, {1}), (4, {2}), (4, {3}), (2, {4}), (4, {1, 3}), (2, {2, 5})]
)
def test_the_valid_prefix_is_kept_and_only_the_rest_recomputed(impl, kind, block_size, failed):
    prompt = make_prompt(13, 1)
    snap = exported(impl, prompt, PARAMS[kind], steps=2)  # 14 computed positions
    n, keep = snap.num_computed_tokens, min(failed) * block_size
    dst = Engine(MODEL, 48, block_size)
    neighbour = dst.add_request(make_prompt(6, 2), GREEDY)
    dst.step()
    recomputed = impl.import_with_load_errors(dst, corrupt(snap, failed, block_size), failed)
    assert recomputed == n - keep, (
        f"{n} positions, first failed block {min(failed)} of {block_size}: keep {keep}, recompute {n - keep} "
        f"(every block after the first failed one too), got {recomputed}"
    )
    request = dst.requests[snap.request_id]
    assert request.status == RequestStatus.RUNNING and request.num_computed_tokens == keep, (
        f"imported running with the kept prefix computed ({keep}), got {request}"
    )
    assert len(request.block_table) == math.ceil((n + 1) / block_size), (
        "the same blocks import_request claims"
    )
    forward = dst.num_forward_tokens
    dst.step()
    assert dst.num_forward_tokens - forward == (n - keep + 1) + 1, (
        f"the next step recomputes {n - keep} positions and decodes 1 (plus the neighbour's decode); "
        f"ran {dst.num_forward_tokens - forward}"
    )
    out = dst.run_until_done()
    assert out[snap.request_id] == reference_output(prompt, PARAMS[kind]), "recovered: as never-moved"
    assert out[neighbour] == reference_output(make_prompt(6, 2), GREEDY), "the neighbour is unharmed"
    assert dst.usage == 0.0


@task7
@pytest.mark.parametrize("failed", [{0}, {0, 2}])
def test_a_corrupt_first_block_means_a_full_recompute(impl, failed):
    prompt = make_prompt(11, 3)
    snap = exported(impl, prompt, SAMPLED, steps=3)  # 13 computed positions
    dst = Engine(MODEL, 48, 4)
    recomputed = impl.import_with_load_errors(dst, corrupt(snap, failed, 4), failed)
    assert recomputed == 13, f"nothing valid to keep: all 13 positions are recomputed, got {recomputed}"
    forward = dst.num_forward_tokens
    dst.step()
    assert dst.num_forward_tokens - forward == 14, "the next step computes every token of the request"
    assert dst.run_until_done()[snap.request_id] == reference_output(prompt, SAMPLED)


@task7
def test_no_corruption_means_no_recompute(impl):
    prompt = make_prompt(9, 4)
    snap = exported(impl, prompt, SAMPLED, steps=2)
    dst = Engine(MODEL, 48, 4)
    assert impl.import_with_load_errors(dst, snap, set()) == 0, "nothing failed: nothing to recompute"
    assert dst.requests[snap.request_id].num_computed_tokens == snap.num_computed_tokens
    forward = dst.num_forward_tokens
    dst.step()
    assert dst.num_forward_tokens - forward == 1, "its next step is a decode"
    assert dst.requests[snap.request_id].epoch == snap.epoch + 1
    assert dst.run_until_done()[snap.request_id] == reference_output(prompt, SAMPLED)


@task7
@pytest.mark.parametrize(
    "failed, poisoned",
    [({2}, {2}), ({1}, {3})],
    ids=["the-failed-block", "a-valid-block-after-the-first-failed-one"],
)
def test_a_dropped_block_may_hold_anything_even_nan(impl, failed, poisoned):
    prompt = make_prompt(12, 5)
    snap = exported(impl, prompt, SAMPLED, steps=2)  # 13 positions = blocks 0..3 of 4
    dst = Engine(MODEL, 48, 4)
    try:
        recomputed = impl.import_with_load_errors(dst, corrupt(snap, poisoned, 4, value=float("nan")), failed)
    except SnapshotError as exc:
        pytest.fail(
            f"failed blocks {failed}, NaN in block(s) {poisoned}: every block from the first failed one on is "
            f"dropped and recomputed, its K/V never read, so NaN there is no reason to refuse ({exc})"
        )
    keep = min(failed) * 4
    assert recomputed == 13 - keep, (
        f"the K/V from block {min(failed)} on is dropped: {13 - keep} positions recomputed, got {recomputed}"
    )
    assert dst.run_until_done()[snap.request_id] == reference_output(prompt, SAMPLED)


@task7
def test_block_0_failed_needs_no_free_block(impl):
    """With block 0 failed nothing is kept and nothing is allocated (the request waits to be recomputed,
    as task 4's readmit), so a full pool is no reason for OutOfBlocksError."""
    prompt = make_prompt(12, 9)
    snap = exported(impl, prompt, GREEDY, steps=2)  # 13 positions
    dst = Engine(MODEL, 8, 4)
    taken = dst.block_pool.allocate(8)  # not one block free
    try:
        recomputed = impl.import_with_load_errors(dst, corrupt(snap, {0}, 4), {0})
    except OutOfBlocksError:
        pytest.fail("block 0 failed: nothing is kept, so nothing is allocated now and a full pool is fine")
    assert recomputed == 13, f"block 0 failed: all 13 positions are recomputed, got {recomputed}"
    assert [r.request_id for r in dst.waiting] == [snap.request_id], "it waits to be recomputed"
    dst.block_pool.free(taken)
    assert dst.run_until_done()[snap.request_id] == reference_output(prompt, GREEDY)


@task7
def test_nan_in_the_kept_prefix_is_still_refused(impl):
    snap = exported(impl, make_prompt(12, 6), SAMPLED, steps=2)
    dst = Engine(MODEL, 48, 4)
    kv = snap.kv.clone()
    kv[1] = float("nan")  # block 0, which the report says is fine
    before = engine_state(dst)
    with pytest.raises(SnapshotError):
        impl.import_with_load_errors(dst, dataclasses.replace(snap, kv=kv), {2})
    assert_unchanged(before, engine_state(dst), "a refused partial import")


@task7
@pytest.mark.parametrize("failed", [{4}, {-1}, {0, 9}])
def test_failed_blocks_outside_the_kv_are_refused(impl, failed):
    snap = exported(impl, make_prompt(12, 7), GREEDY, steps=2)  # 13 positions = blocks 0..3 of 4
    dst = Engine(MODEL, 48, 4)
    before = engine_state(dst)
    with pytest.raises(ValueError):
        impl.import_with_load_errors(dst, snap, failed)
    assert_unchanged(before, engine_state(dst), "a refused partial import")
    assert snap.request_id not in dst.requests


@task7
def test_a_block_index_past_the_kv_is_refused_at_a_block_boundary(impl):
    """8 positions in blocks of 4 are blocks 0 and 1: block 2 (the headroom block for the next token)
    holds no K/V, so a report naming it is refused."""
    snap = exported(impl, make_prompt(7, 7), GREEDY, steps=2)
    assert snap.num_computed_tokens == 8
    dst = Engine(MODEL, 48, 4)
    before = engine_state(dst)
    with pytest.raises(ValueError):
        impl.import_with_load_errors(dst, snap, {2})
    assert_unchanged(before, engine_state(dst), "a refused partial import")
    assert snap.request_id not in dst.requests


@task7
def test_a_bad_index_is_refused_before_validation(impl):
    """Both refusals apply: the block index is checked first (a plain ValueError, not the SnapshotError,
    itself a ValueError, that validation would raise)."""
    snap = exported(impl, make_prompt(12, 7), GREEDY, steps=2)
    dst = Engine(MODEL, 48, 4)
    before = engine_state(dst)
    with pytest.raises(ValueError) as refused:
        impl.import_with_load_errors(dst, dataclasses.replace(snap, geometry="another model"), {99})
    assert not isinstance(refused.value, SnapshotError), (
        f"the bad block index is refused before validation, got {refused.value!r}"
    )
    assert_unchanged(before, engine_state(dst), "a refused partial import")


@task7
def test_nan_in_the_kept_prefix_is_refused_before_the_room_check(impl):
    snap = exported(impl, make_prompt(12, 8), GREEDY, steps=2)  # 13 positions + 1: 4 blocks of 4
    kv = snap.kv.clone()
    kv[0] = float("nan")  # block 0, kept
    dst = Engine(MODEL, 8, 4)
    dst.block_pool.allocate(6)  # 2 free
    before = engine_state(dst)
    with pytest.raises(SnapshotError):
        impl.import_with_load_errors(dst, dataclasses.replace(snap, kv=kv), {2})
    assert_unchanged(before, engine_state(dst), "a refused partial import")


@task7
@pytest.mark.parametrize("failed", [{0}, {2}])
@pytest.mark.parametrize("rows", [None, 16, 12])
def test_the_kv_shape_is_checked_on_every_path(impl, failed, rows):
    """Whatever is kept, the K/V must have one row per computed position (13 here): a tensor of
    another shape, or none, is refused, even when block 0 failed and nothing is kept."""
    snap = exported(impl, make_prompt(12, 9), GREEDY, steps=2)
    if rows is None:
        kv = None
    elif rows > snap.num_computed_tokens:
        kv = torch.cat([snap.kv, torch.zeros(rows - snap.num_computed_tokens, *snap.kv.shape[1:])])
    else:
        kv = snap.kv[:rows].clone()
    dst = Engine(MODEL, 48, 4)
    before = engine_state(dst)
    with pytest.raises(SnapshotError):
        impl.import_with_load_errors(dst, dataclasses.replace(snap, kv=kv), failed)
    assert_unchanged(before, engine_state(dst), "a refused partial import")
    assert snap.request_id not in dst.requests


@task7
def test_no_room_is_loud_and_changes_nothing(impl):
    snap = exported(impl, make_prompt(12, 8), GREEDY, steps=2)  # 13 positions + 1: 4 blocks of 4
    dst = Engine(MODEL, 8, 4)
    dst.block_pool.allocate(5)  # 3 free
    before = engine_state(dst)
    with pytest.raises(OutOfBlocksError):
        impl.import_with_load_errors(dst, corrupt(snap, {2}, 4), {2})
    assert_unchanged(before, engine_state(dst), "an import without room")


class AdmissionRefused(Exception):
    """Not a RuntimeError: the starter's NotImplementedError must not pass for it."""


@task7
def test_a_failure_after_allocation_gives_the_blocks_back(impl, monkeypatch):
    snap = exported(impl, make_prompt(12, 10), SAMPLED, steps=2)
    dst = Engine(MODEL, 48, 4)
    dst.add_request(make_prompt(5, 11), GREEDY)
    dst.step()
    before = engine_state(dst)

    def refuse(request):
        raise AdmissionRefused("admission refused after the blocks were claimed")

    monkeypatch.setattr(dst, "admit_running", refuse)
    with pytest.raises(AdmissionRefused):
        impl.import_with_load_errors(dst, corrupt(snap, {2}, 4), {2})
    assert_unchanged(before, engine_state(dst), "a partial import that failed after allocating")


def _invalid(snap, kind: str, dst: Engine):
    if kind == "no_generator_state":
        return dataclasses.replace(snap, generator_state=None)
    if kind == "token_outside_vocab":
        return dataclasses.replace(snap, prompt_token_ids=(CONFIG.vocab_size, *snap.prompt_token_ids[1:]))
    if kind == "finished":
        return dataclasses.replace(
            snap,
            sampling_params=dataclasses.replace(snap.sampling_params, max_tokens=len(snap.output_token_ids)),
        )
    if kind == "stale":
        dst.epochs[snap.request_id] = snap.epoch + 1  # this engine has seen the request move on
        return snap
    raise AssertionError(kind)


@task7
@pytest.mark.parametrize("failed", [{0}, {2}])
@pytest.mark.parametrize("kind", ["no_generator_state", "token_outside_vocab", "finished", "stale"])
def test_what_validation_refuses_is_refused_on_every_path(impl, kind, failed):
    """Block 0 failed (readmit by recompute) or a later block (a partial import): either way the rest of
    the snapshot is validated, and a refusal changes nothing."""
    snap = exported(impl, make_prompt(12, 12), SAMPLED, steps=2)
    dst = Engine(MODEL, 48, 4)
    bad = _invalid(corrupt(snap, failed, 4), kind, dst)
    before, epochs = engine_state(dst), dict(dst.epochs)
    with pytest.raises(SnapshotError):
        impl.import_with_load_errors(dst, bad, failed)
    assert_unchanged(before, engine_state(dst), f"refusing a {kind} snapshot with blocks {failed} failed")
    assert dst.epochs == epochs and snap.request_id not in dst.requests


@task7
@pytest.mark.parametrize("failed", [{0}, {2}, set()])
def test_every_path_moves_the_epoch_on_and_leaves_the_snapshot_alone(impl, failed):
    prompt = make_prompt(12, 13)
    snap = corrupt(exported(impl, prompt, SAMPLED, steps=2), failed, 4)
    kv = snap.kv.clone()
    dst = Engine(MODEL, 48, 4)
    impl.import_with_load_errors(dst, snap, failed)
    assert torch.equal(snap.kv, kv), "the snapshot the caller gave is not modified (its K/V included)"
    got = (dst.requests[snap.request_id].epoch, dst.epochs[snap.request_id])
    assert got == (snap.epoch + 1, snap.epoch + 1), (
        f"blocks {failed} failed: the request is one move further, (epoch, engine's record) "
        f"{(snap.epoch + 1, snap.epoch + 1)}, got {got}"
    )
    dst.step()
    elsewhere = Engine(MODEL, 48, 8)
    impl.import_request(elsewhere, impl.export_request(dst, snap.request_id))  # it moves on
    before = engine_state(dst)
    with pytest.raises(SnapshotError):
        impl.import_with_load_errors(dst, snap, failed)  # the same delivery, late: stale here now
    assert_unchanged(before, engine_state(dst), "a late duplicate of a partial import")
    assert elsewhere.run_until_done()[snap.request_id] == reference_output(prompt, SAMPLED)


# ---------------------------------------------------------------- task 7: partial_recovery_cost
@task7
@pytest.mark.parametrize(
    "failed, keep, flops",  # flops: task 4's model for this config, recomputing positions keep..13
    [(set(), 14, 0), ({0}, 0, 542_976), ({2}, 8, 238_848), ({1, 3}, 4, 392_960), ({3}, 12, 80_640)],
)
def test_partial_recovery_cost_ships_the_prefix_and_recomputes_the_rest(impl, failed, keep, flops):
    snap = exported(impl, make_prompt(13, 9), GREEDY, steps=2)  # 14 computed positions
    got = impl.partial_recovery_cost(snap, CONFIG, 4, failed, link_gbps=8.0, flops_per_s=1e9)
    bytes_per_token = CONFIG.kv_bytes_per_token  # 256 for the lab model
    assert isinstance(got, impl.PartialRecoveryCost), f"want a PartialRecoveryCost, got {type(got)}"
    assert (got.kept_tokens, got.ship_bytes, got.recompute_tokens) == (
        keep,
        keep * bytes_per_token,
        14 - keep,
    ), (
        f"first failed block of {sorted(failed)}: keep {keep} positions ({keep * bytes_per_token} bytes shipped and "
        f"used; the failed block's bytes are not), recompute {14 - keep}; got {got}"
    )
    assert got.recompute_flops == flops, (
        f"recomputing positions {keep}..13 costs {flops} FLOPs (each position what it costs in a full "
        f"recompute, as recovery_cost prices it), got {got.recompute_flops}"
    )
    assert math.isclose(got.ship_s, keep * bytes_per_token * 8 / 8e9)
    assert math.isclose(got.recompute_s, flops / 1e9)
    assert math.isclose(got.total_s, got.ship_s + got.recompute_s)


@task7
def test_partial_recovery_cost_matches_task_4_at_the_extremes(impl):
    snap = exported(impl, make_prompt(20, 10), SAMPLED, steps=3)
    whole = impl.recovery_cost(snap, CONFIG, 1.0, 1e10)
    nothing_failed = impl.partial_recovery_cost(snap, CONFIG, 8, set(), 1.0, 1e10)
    first_failed = impl.partial_recovery_cost(snap, CONFIG, 8, {0}, 1.0, 1e10)
    assert (nothing_failed.ship_bytes, nothing_failed.recompute_flops) == (whole.ship_bytes, 0), (
        "no failed block: all shipped, nothing recomputed"
    )
    assert (first_failed.ship_bytes, first_failed.recompute_flops) == (0, whole.recompute_flops), (
        "block 0 failed: nothing shipped, everything recomputed"
    )


@task7
@pytest.mark.parametrize(
    "block_size, failed, rates",
    [
        (4, {9}, (1.0, 1e9)),
        (4, {-1}, (1.0, 1e9)),
        (0, {1}, (1.0, 1e9)),
        (0, set(), (1.0, 1e9)),
        (-4, set(), (1.0, 1e9)),
        (4, {1}, (0.0, 1e9)),
        (4, {1}, (1.0, -1.0)),
        (4, set(), (1.0, -1.0)),
        (4, set(), (0.0, 1e9)),
    ],
)
def test_partial_recovery_cost_refuses_what_it_cannot_price(impl, block_size, failed, rates):
    snap = exported(impl, make_prompt(12, 11), GREEDY, steps=2)
    with pytest.raises(ValueError):
        impl.partial_recovery_cost(snap, CONFIG, block_size, failed, *rates)

"""Lab 01 spec, task 5: the pull handoff as vLLM's NIXL connector does it. Run it with `pytest -m lab01_task5`.

The source finishes the request and holds its blocks under a lease (heartbeats extend it, expiry frees
the blocks); the reader claims its own blocks, reads the source's in place with a one-sided read, and
notifies the source. Every engine keeps time by its own clock (``SkewedClock`` over one base clock the
tests move). The oracles: the never-moved output, the source's K/V as it was when the request left
(a read that raced expiry must never be imported), and the block accounting of every engine.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from minivllm import (
    Engine,
    LeaseState,
    ManualClock,
    ModelConfig,
    OutOfBlocksError,
    PullParams,
    ReadVerdict,
    RequestStatus,
    SkewedClock,
    SnapshotError,
    estimate_clock_offset,
    geometry_fingerprint,
)
from minivllm.testing import (
    CONFIG,
    GREEDY,
    MODEL,
    NEIGHBOUR_PARAMS,
    SAMPLED,
    assert_unchanged,
    check_pool,
    engine_state,
    fragment,
    logical_kv,
    make_prompt,
    reference_output,
    start,
    step,
)

task5 = pytest.mark.lab01_task5


# ---------------------------------------------------------------- helpers (test-side oracles only)
def clocked_engine(clock, block_size: int = 4, num_blocks: int | None = None, layout: str = "NHD") -> Engine:
    return Engine(MODEL, num_blocks or 160 // block_size + 8, block_size, clock=clock, kv_layout=layout)


def held_case(
    impl, lease_s: float = 30.0, block_size: int = 4, layout: str = "NHD", params=SAMPLED, steps: int = 3
):
    """A source on a clock at 100 s, with a neighbour, and one request exported under a lease (a 13-token
    prompt after ``steps`` steps: 12 + steps computed positions)."""
    clock = ManualClock(100.0)
    src = clocked_engine(clock, block_size, layout=layout)
    fragment(src)
    neighbour = src.add_request(make_prompt(6, salt=8), NEIGHBOUR_PARAMS[1])
    rid, prompt = start(src, 13, params, steps)
    request = src.requests[rid]
    before = {
        "table": list(request.block_table),
        "kv": logical_kv(src, rid),
        "generator": None if request.generator is None else request.generator.get_state(),
        "tokens": list(request.all_token_ids),
        "computed": request.num_computed_tokens,
        "epoch": request.epoch,
        "usage": src.usage,
    }
    pulled = impl.export_held(src, rid, lease_s=lease_s)
    return src, clock, rid, prompt, neighbour, pulled, before


def lease_of(engine: Engine, pulled: PullParams):
    return engine.leases.get(pulled.snapshot.snapshot_id)


def squat(engine: Engine, tokens: int = 20) -> str:
    """Another request takes the engine's next free blocks (freed blocks go to the FRONT, as in vLLM,
    so these are the blocks freed last) and writes its own K/V into them."""
    rid = engine.add_request(make_prompt(tokens, salt=61), GREEDY)
    engine.step()
    return rid


def assert_holds_the_kv(engine: Engine, rid: str, want: list[torch.Tensor], what: str) -> None:
    got = logical_kv(engine, rid)
    wrong = [p for p, (a, b) in enumerate(zip(want, got, strict=True)) if not torch.equal(a, b)]
    assert len(got) == len(want) and not wrong, (
        f"{what}: the K/V at positions {wrong} is not the K/V the request left the source with"
    )


# ---------------------------------------------------------------- the source: export, heartbeats, expiry, notifications
@task5
def test_export_held_finishes_the_request_and_holds_its_blocks(impl):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    assert isinstance(pulled, PullParams), f"export_held returns PullParams, got {type(pulled)}"
    assert rid not in src.requests and all(r.request_id != rid for r in [*src.running, *src.waiting]), (
        f"{rid} finishes on the source: it must leave its requests and queues"
    )
    snap = pulled.snapshot
    lease = lease_of(src, pulled)
    assert lease.state == LeaseState.ACTIVE and lease.deadline == 130.0 == pulled.expires_at, (
        f"the lease runs lease_s on the source's clock: deadline 130.0, got {lease.deadline} "
        f"(params say {pulled.expires_at})"
    )
    assert (snap.request_id, list(snap.prompt_token_ids + snap.output_token_ids)) == (rid, before["tokens"])
    assert snap.num_computed_tokens == before["computed"] and snap.kv is None, (
        "the params carry the request's identity; its K/V stays in the blocks (kv=None)"
    )
    assert torch.equal(snap.generator_state, before["generator"]) and snap.epoch == before["epoch"]
    assert snap.geometry == geometry_fingerprint(CONFIG) and snap.sampling_params == SAMPLED
    assert list(pulled.remote_block_ids) == before["table"][: math.ceil(before["computed"] / 4)], (
        f"remote_block_ids are the source's blocks of the K/V in logical order, {before['table']}; "
        f"got {pulled.remote_block_ids}"
    )
    assert (pulled.remote_block_size, pulled.kv_layout) == (4, "NHD")
    assert src.usage == before["usage"] and sorted(src.leases.held_block_ids) == sorted(before["table"]), (
        "the held blocks stay allocated to the lease"
    )
    check_pool(src)
    squat(src)  # a newcomer: freed blocks would be the first it gets
    src.run_until_done()
    assert rid not in src.finished, (
        "a request that left is not recorded in the source's engine.finished (the outputs of requests that "
        "ran to their end there): it goes on elsewhere, and must never run on the source again"
    )
    wrong = [
        p
        for p, kv in enumerate(before["kv"])
        if not torch.equal(src.kv_cache.kv[before["table"][p // 4], p % 4], kv)
    ]
    assert not wrong, f"held blocks were reused by someone else: K/V changed at positions {wrong}"


@task5
def test_export_held_names_only_the_blocks_that_hold_kv(impl):
    """A request imported with a headroom block (its K/V fills its last block exactly) holds one block
    more than its K/V: the lease holds all of them, the params name only the K/V's."""
    clock = ManualClock(100.0)
    a, b = clocked_engine(clock, 4), clocked_engine(clock, 4)
    rid, prompt = start(a, 7, GREEDY, 2)  # 8 computed positions: 2 full blocks
    impl.import_request(b, impl.export_request(a, rid))
    table = list(b.requests[rid].block_table)
    assert len(table) == 3, "import gives the headroom block (task 2)"
    pulled = impl.export_held(b, rid)
    assert list(pulled.remote_block_ids) == table[:2], (
        f"8 positions in blocks of 4 are the first 2 blocks {table[:2]}; got {pulled.remote_block_ids}"
    )
    assert sorted(b.leases.held_block_ids) == sorted(table), "the lease holds every block the request had"
    clock.advance(30.0)
    impl.reap_expired(b)
    assert b.usage == 0.0, "expiry frees every held block, the headroom block included"
    check_pool(b)


@task5
def test_export_held_rejects_what_it_cannot_hold(impl):
    src = clocked_engine(ManualClock(100.0))
    rid, _ = start(src, 8, GREEDY, 1)
    waiting = src.add_request(make_prompt(5, salt=3), GREEDY)
    before = engine_state(src)
    with pytest.raises(KeyError):
        impl.export_held(src, "no-such-request")
    with pytest.raises(ValueError):
        impl.export_held(src, waiting)
    for lease_s in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            impl.export_held(src, rid, lease_s=lease_s)
    assert_unchanged(before, engine_state(src), "a refused export_held")
    assert not src.leases.active(), "a refused export_held opens no lease"


@task5
def test_a_heartbeat_extends_to_two_thirds_of_the_lease_from_now_never_less(impl):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, lease_s=30.0)
    sid = pulled.snapshot.snapshot_id
    clock.advance(1.0)  # 101 s: now + 20 = 121 < 130
    got = impl.heartbeat(src, [sid])
    assert got == {sid: 130.0} and lease_of(src, pulled).deadline == 130.0, (
        f"an early heartbeat never brings the deadline closer: still 130.0, got {got}"
    )
    clock.advance(14.0)  # 115 s: now + 20 = 135
    assert impl.heartbeat(src, [sid]) == {sid: 135.0}, "at 115 s the lease runs to at least 115 + 2/3 x 30"
    clock.advance(10.0)  # 125 s: 145
    assert impl.heartbeat(src, [sid, "someone-else/0"]) == {sid: 145.0}, "unknown ids are ignored"
    assert lease_of(src, pulled).deadline == 145.0 and lease_of(src, pulled).state == LeaseState.ACTIVE
    check_pool(src)


@task5
def test_a_heartbeat_extends_by_two_thirds_of_a_lease_not_a_multiple_of_three(impl):
    """The lab's rule is the exact two thirds of ``lease_s`` (vLLM floors ``kv_lease_duration * 2 // 3``
    to whole seconds): the two differ for a 10 s lease."""
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, lease_s=10.0)  # deadline 110
    sid = pulled.snapshot.snapshot_id
    clock.advance(5.0)  # 105 s: 105 + 20/3 = 111.67 > 110
    got = impl.heartbeat(src, [sid])
    assert list(got) == [sid] and got[sid] == pytest.approx(105.0 + 20.0 / 3.0), (
        f"a 10 s lease beaten at 105 s runs to 105 + 2/3 x 10 = 111.67 s, got {got}"
    )
    assert lease_of(src, pulled).deadline == got[sid]


@task5
def test_a_heartbeat_cannot_bring_back_a_lease_that_ended(impl):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, lease_s=10.0)
    sid = pulled.snapshot.snapshot_id
    clock.advance(10.0)
    assert impl.reap_expired(src) == [sid]
    state = engine_state(src)
    assert impl.heartbeat(src, [sid]) == {}, "an expired lease is not active: nothing to extend"
    lease = lease_of(src, pulled)
    assert lease.state == LeaseState.EXPIRED and lease.deadline == 110.0, (
        f"a heartbeat after expiry changes nothing: (state, deadline) = {(lease.state, lease.deadline)}"
    )
    assert_unchanged(state, engine_state(src), "a heartbeat for an expired lease")
    check_pool(src)


@task5
def test_expiry_frees_the_blocks_at_the_deadline_and_resumes_nothing(impl):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, lease_s=30.0)
    sid = pulled.snapshot.snapshot_id
    clock.advance(29.5)
    assert impl.reap_expired(src) == [] and lease_of(src, pulled).state == LeaseState.ACTIVE, (
        "0.5 s before the deadline nothing expires"
    )
    clock.advance(0.5)  # exactly the deadline
    assert impl.reap_expired(src) == [sid], "a lease expires once clock() >= deadline"
    assert lease_of(src, pulled).state == LeaseState.EXPIRED and impl.reap_expired(src) == []
    assert rid not in src.requests, "expiry resumes nothing: the request finished here when it left"
    neighbour_blocks = len(src.requests[neighbour].block_table)
    assert src.usage == neighbour_blocks / src.num_blocks, f"expiry frees the held blocks, usage {src.usage}"
    check_pool(src)
    squatter = squat(src, tokens=4 * len(before["table"]))
    reused = set(src.requests[squatter].block_table) & set(before["table"])
    assert reused, "freed blocks go to the front of the free list: the very next request reuses them"


@task5
def test_expiry_leaves_younger_leases_alone(impl):
    clock = ManualClock(100.0)
    src = clocked_engine(clock)
    first, _ = start(src, 9, GREEDY, 0)
    second, _ = start(src, 7, SAMPLED, 0, salt=4)
    step(src, 2)
    old = impl.export_held(src, first, lease_s=10.0)  # expires at 110
    clock.advance(5.0)
    young = impl.export_held(src, second, lease_s=10.0)  # expires at 115
    clock.advance(5.0)
    assert impl.reap_expired(src) == [old.snapshot.snapshot_id], "at 110 s only the first lease has expired"
    assert lease_of(src, young).state == LeaseState.ACTIVE
    check_pool(src)


@task5
def test_a_notification_while_the_blocks_are_held_commits_once(impl):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    sid = pulled.snapshot.snapshot_id
    assert impl.notify_read_done(src, sid) == ReadVerdict.IN_TIME
    assert lease_of(src, pulled).state == LeaseState.COMMITTED
    assert src.usage == len(src.requests[neighbour].block_table) / src.num_blocks, (
        "commit frees the held blocks"
    )
    check_pool(src)
    state = engine_state(src)
    assert impl.notify_read_done(src, sid) == ReadVerdict.NOT_YOURS, "a lease is settled by one notification"
    assert src.leases.late_notifications == 1, "a notification that finds no active lease is counted"
    assert_unchanged(state, engine_state(src), "a second notification")
    check_pool(src)


@task5
def test_a_notification_past_the_deadline_but_before_the_reap_is_in_time(impl):
    """What makes a read valid is that the blocks were still held, not what the clock says."""
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, lease_s=10.0)
    clock.advance(15.0)  # past the deadline; the source has not reaped yet
    assert impl.notify_read_done(src, pulled.snapshot.snapshot_id) == ReadVerdict.IN_TIME
    assert lease_of(src, pulled).state == LeaseState.COMMITTED and src.leases.late_notifications == 0
    check_pool(src)


@task5
def test_a_notification_after_expiry_is_late_and_counted(impl):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, lease_s=10.0)
    sid = pulled.snapshot.snapshot_id
    clock.advance(10.0)
    impl.reap_expired(src)
    state = engine_state(src)
    assert impl.notify_read_done(src, sid) == ReadVerdict.EXPIRED, "the first notification after expiry"
    assert lease_of(src, pulled).state == LeaseState.LATE and src.leases.late_notifications == 1
    assert impl.notify_read_done(src, sid) == ReadVerdict.NOT_YOURS, "a late lease is settled too"
    assert impl.notify_read_done(src, "never/leased") == ReadVerdict.NOT_YOURS, "an unknown id is not yours"
    assert src.leases.late_notifications == 3
    assert_unchanged(state, engine_state(src), "notifications after expiry")
    check_pool(src)


# ---------------------------------------------------------------- the reader: claim, read, notify, decide
@task5
@pytest.mark.parametrize("dst_block_size, steps", [(4, 3), (8, 3), (4, 4), (8, 4)])
def test_start_pull_holds_the_blocks_while_the_read_is_in_flight(impl, dst_block_size, steps):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, steps=steps)
    dst = clocked_engine(clock, dst_block_size)
    dst.add_request(make_prompt(5, salt=9), NEIGHBOUR_PARAMS[2])
    dst.step()
    used = dst.block_pool.num_used
    impl.start_pull(dst, pulled)
    n = pulled.snapshot.num_computed_tokens
    want = math.ceil((n + 1) / dst_block_size)
    assert dst.block_pool.num_used - used == want, (
        f"start_pull claims the blocks import_request would ({n} positions of K/V and room for the next "
        f"token in blocks of {dst_block_size}: {want}); claimed {dst.block_pool.num_used - used}"
    )
    request = dst.requests.get(rid)
    assert request is not None and request.status == RequestStatus.WAITING_FOR_REMOTE_KVS, (
        f"the pulled request is live on the reader, waiting for its K/V; got {request}"
    )
    assert request.epoch == before["epoch"] + 1 == dst.epochs[rid], "the pulled request is one move further"
    assert lease_of(src, pulled).state == LeaseState.ACTIVE, "starting a pull does not touch the source"
    forward = dst.num_forward_tokens
    dst.step()
    assert dst.num_forward_tokens - forward == 1, "a request waiting for remote K/V is not scheduled"
    check_pool(dst)


@task5
@pytest.mark.parametrize("dst_block_size", [4, 8])
def test_a_read_in_time_imports_and_frees_the_source(impl, dst_block_size):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    dst = clocked_engine(clock, dst_block_size)
    other = dst.add_request(make_prompt(5, salt=9), NEIGHBOUR_PARAMS[2])
    dst.step()
    impl.start_pull(dst, pulled)
    outcome = impl.finish_pull(dst, src, pulled, clock_offset=0.0, margin_s=5.0, policy="fail")
    assert outcome == "imported", f"a read well before the deadline is imported, got {outcome!r}"
    assert lease_of(src, pulled).state == LeaseState.COMMITTED, "the reader's notification commits the lease"
    assert src.usage == len(src.requests[neighbour].block_table) / src.num_blocks, "the source frees"
    request = dst.requests[rid]
    assert request.status == RequestStatus.RUNNING and request.num_computed_tokens == before["computed"]
    assert_holds_the_kv(dst, rid, before["kv"], "an imported read")
    forward = dst.num_forward_tokens
    dst.step()
    assert dst.num_forward_tokens - forward == 2, "its next step decodes 1 token (beside the neighbour's)"
    check_pool(src)
    check_pool(dst)
    outputs = {**src.run_until_done(), **dst.run_until_done()}
    assert outputs[rid] == reference_output(prompt, SAMPLED), "pulled: output as never-moved"
    assert outputs[other] == reference_output(make_prompt(5, salt=9), NEIGHBOUR_PARAMS[2]), "the neighbour"


@task5
@pytest.mark.parametrize(
    "src_bs, dst_bs, ok",
    [(4, 4, True), (4, 8, True), (2, 8, True), (1, 3, True), (8, 4, False), (4, 6, False), (3, 4, False)],
)
def test_the_block_size_ratio_rule_both_ways(impl, src_bs, dst_bs, ok):
    """vLLM reads each remote block into a slice of ONE local block, so the reader's block size must be a
    multiple of the source's; the other way round is refused (whatever vLLM's message says)."""
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, block_size=src_bs)
    dst = clocked_engine(clock, dst_bs)
    fragment(dst)
    if not ok:
        state = engine_state(dst)
        with pytest.raises(SnapshotError):
            impl.start_pull(dst, pulled)
        assert_unchanged(
            state, engine_state(dst), f"a refused pull from blocks of {src_bs} into blocks of {dst_bs}"
        )
        assert lease_of(src, pulled).state == LeaseState.ACTIVE, "a refused pull leaves the lease alone"
        return
    impl.start_pull(dst, pulled)
    assert impl.finish_pull(dst, src, pulled) == "imported"
    assert_holds_the_kv(dst, rid, before["kv"], f"blocks of {src_bs} read into blocks of {dst_bs}")
    check_pool(dst)
    assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED), "as never-moved"


@task5
@pytest.mark.parametrize(
    "src_layout, dst_layout, dst_bs",
    [("NHD", "NHD", 8), ("HND", "HND", 4), ("HND", "HND", 8), ("NHD", "HND", 4), ("HND", "NHD", 8)],
)
def test_layout_agreement_both_ways(impl, src_layout, dst_layout, dst_bs):
    """Raw blocks are bytes: they can only be read into a cache laid out the same way."""
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, layout=src_layout)
    assert pulled.kv_layout == src_layout, f"the params carry the source's layout, got {pulled.kv_layout}"
    dst = clocked_engine(clock, dst_bs, layout=dst_layout)
    if src_layout != dst_layout:
        state = engine_state(dst)
        with pytest.raises(SnapshotError):
            impl.start_pull(dst, pulled)
        assert_unchanged(state, engine_state(dst), f"a refused {src_layout} -> {dst_layout} pull")
        return
    impl.start_pull(dst, pulled)
    assert impl.finish_pull(dst, src, pulled) == "imported"
    assert_holds_the_kv(dst, rid, before["kv"], f"{src_layout} blocks of 4 read into blocks of {dst_bs}")
    assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED), "as never-moved"


def bad_params(pulled: PullParams, dst: Engine, kind: str) -> PullParams:
    snap = pulled.snapshot
    if kind == "duplicate_id":
        dst.add_request(make_prompt(4, salt=40), GREEDY, request_id=snap.request_id)
        return pulled
    if kind == "stale_epoch":
        dst.epochs[snap.request_id] = snap.epoch + 2  # this engine has seen the request further on
        return pulled
    changed = {
        "geometry": {"geometry": geometry_fingerprint(ModelConfig(num_layers=3))},
        "token_outside_vocab": {"prompt_token_ids": (CONFIG.vocab_size, *snap.prompt_token_ids[1:])},
        "finished": {
            "sampling_params": dataclasses.replace(
                snap.sampling_params, max_tokens=len(snap.output_token_ids)
            )
        },
        "no_generator_state": {"generator_state": None},
        "never_fits": {"sampling_params": dataclasses.replace(snap.sampling_params, max_tokens=400)},
    }
    if kind in changed:
        return dataclasses.replace(pulled, snapshot=dataclasses.replace(snap, **changed[kind]))
    blocks = {
        "one_block_short": pulled.remote_block_ids[:-1],
        "one_block_extra": (*pulled.remote_block_ids, 0),
    }
    return dataclasses.replace(pulled, remote_block_ids=blocks[kind])


@task5
@pytest.mark.parametrize(
    "kind",
    [
        "duplicate_id",
        "stale_epoch",
        "geometry",
        "token_outside_vocab",
        "finished",
        "no_generator_state",
        "never_fits",
        "one_block_short",
        "one_block_extra",
    ],
)
def test_start_pull_refuses_what_it_could_not_run_and_changes_nothing(impl, kind):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    dst = clocked_engine(clock, 8)
    fragment(dst)
    bad = bad_params(pulled, dst, kind)
    state, epochs = engine_state(dst), dict(dst.epochs)
    with pytest.raises(SnapshotError):
        impl.start_pull(dst, bad)
    assert_unchanged(state, engine_state(dst), f"a refused pull ({kind})")
    assert dst.epochs == epochs, "a refused pull records no epoch"
    assert lease_of(src, pulled).state == LeaseState.ACTIVE


@task5
def test_start_pull_without_room_is_loud_and_an_exact_fit_goes_through(impl):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    need = math.ceil((pulled.snapshot.num_computed_tokens + 1) / 4)
    dst = clocked_engine(clock, 4, num_blocks=12)
    taken = dst.block_pool.allocate(12 - need + 1)  # one block short
    state = engine_state(dst)
    with pytest.raises(OutOfBlocksError):
        impl.start_pull(dst, pulled)
    assert_unchanged(state, engine_state(dst), "a pull without room")
    dst.block_pool.free(taken[:1])  # now exactly enough
    impl.start_pull(dst, pulled)
    assert dst.block_pool.num_free == 0 and dst.requests[rid].status == RequestStatus.WAITING_FOR_REMOTE_KVS


@task5
def test_start_pull_failing_after_the_claim_gives_the_blocks_back(impl, monkeypatch):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    dst = clocked_engine(clock, 8)
    fragment(dst)
    state = engine_state(dst)

    def broken(request):
        raise RuntimeError("admission failed after the blocks were claimed")

    monkeypatch.setattr(dst, "await_remote_kv", broken)
    with pytest.raises(RuntimeError, match="after the blocks were claimed"):
        impl.start_pull(dst, pulled)
    assert_unchanged(state, engine_state(dst), "a pull that failed after its claim")
    check_pool(dst)


@task5
@pytest.mark.parametrize("policy", ["recompute", "fail"])
def test_a_read_that_raced_expiry_is_never_imported(impl, policy):
    """The reader's clock runs 1000 s behind the source's and its offset estimate went stale, so its
    deadline check passes; meanwhile the lease expired on the source and a newcomer wrote its own K/V
    into the freed blocks. The read returns that K/V: it must be a load failure, never an import."""
    base = ManualClock(100.0)
    src = clocked_engine(base, 4)
    dst = clocked_engine(SkewedClock(base, offset=-1000.0), 8)
    rid, prompt = start(src, 13, SAMPLED, 3)
    pulled = impl.export_held(src, rid, lease_s=10.0)
    impl.start_pull(dst, pulled)
    base.advance(10.0)
    impl.reap_expired(src)
    squat(src, tokens=16)  # writes its own K/V into the blocks the read will fetch
    outcome = impl.finish_pull(dst, src, pulled, clock_offset=0.0, margin_s=0.0, policy=policy)
    assert outcome != "imported", (
        "a read after the lease expired was imported: it holds another request's K/V"
    )
    assert lease_of(src, pulled).state == LeaseState.LATE and src.leases.late_notifications == 1, (
        "the reader notifies the source even when its read turns out late"
    )
    check_pool(src)
    check_pool(dst)
    if policy == "recompute":
        request = dst.requests.get(rid)
        assert outcome == "recomputed" and request is not None and request.status == RequestStatus.WAITING, (
            f"policy 'recompute': the request waits to recompute its K/V here; got {outcome!r}, {request}"
        )
        assert request.num_computed_tokens == 0 and not request.block_table, (
            "it holds no blocks while it waits"
        )
        assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED), "recomputed: as never-moved"
    else:
        assert outcome == "failed" and rid not in dst.requests and rid in dst.failed, (
            f"policy 'fail': the request ends with an error on the reader; got {outcome!r}"
        )
        assert dst.usage == 0.0, f"the failed pull's blocks are freed, usage {dst.usage}"


@task5
@pytest.mark.parametrize("skew", [-1000.0, 1000.0])
def test_the_deadline_check_uses_the_clock_offset_and_the_margin(impl, skew):
    """The lab's hardening (vLLM checks this only on the turn-2 readback): decline a read that would start
    within margin_s of the deadline, judged on the reader's clock plus its offset estimate."""
    outcomes = {}
    for lead in (6.0, 5.0):  # seconds left on the source's clock when the read would start
        base = ManualClock(100.0)
        src = clocked_engine(base, 4)
        dst = clocked_engine(SkewedClock(base, offset=skew), 4)
        rid, prompt = start(src, 10, SAMPLED, 2)
        pulled = impl.export_held(src, rid, lease_s=30.0)  # deadline 130 on the source's clock
        impl.start_pull(dst, pulled)
        offset = estimate_clock_offset(dst.clock, src.clock)
        base.advance(30.0 - lead)
        outcomes[lead] = impl.finish_pull(
            dst, src, pulled, clock_offset=offset, margin_s=5.0, policy="recompute"
        )
        assert lease_of(src, pulled).state == LeaseState.COMMITTED, (
            "declined or not, the reader notifies, so the source frees at once"
        )
        assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED)
    assert outcomes == {6.0: "imported", 5.0: "recomputed"}, (
        f"with the reader's clock {skew:+.0f} s off the source's: 6 s before the deadline the read goes "
        f"ahead, 5 s before it (= margin_s) it is declined and recomputed; got {outcomes}"
    )


@task5
@pytest.mark.parametrize("error, truly_left, want", [(20.0, 20.0, "recomputed"), (-20.0, 3.0, "imported")])
def test_the_reader_judges_the_deadline_by_its_own_estimate(impl, error, truly_left, want):
    """The reader cannot see the source's clock: it judges by its own clock plus its offset estimate,
    even when that estimate is off. 20 s too high, it believes the deadline has come while 20 s are
    truly left: it declines. 20 s too low, it believes 23 s are left while only 3 truly are (within the
    margin): it reads, the blocks are still held, so the read is in time and imported."""
    base = ManualClock(100.0)
    src = clocked_engine(base, 4)
    dst = clocked_engine(SkewedClock(base, offset=-1000.0), 4)
    rid, prompt = start(src, 10, SAMPLED, 2)
    pulled = impl.export_held(src, rid, lease_s=30.0)  # deadline 130 on the source's clock
    impl.start_pull(dst, pulled)
    base.advance(30.0 - truly_left)
    estimate = estimate_clock_offset(dst.clock, src.clock) + error  # a stale handshake estimate
    outcome = impl.finish_pull(dst, src, pulled, clock_offset=estimate, margin_s=5.0, policy="recompute")
    assert outcome == want, (
        f"the reader's estimate puts the source's clock {error:+.0f} s off the truth ({truly_left:.0f} s truly "
        f"left, margin 5 s): judged on dst.clock() + clock_offset the read is {want!r}, got {outcome!r}"
    )
    assert lease_of(src, pulled).state == LeaseState.COMMITTED, "the reader notifies the source either way"
    check_pool(src)
    check_pool(dst)
    assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED), "as never-moved"


@task5
def test_heartbeats_keep_a_queued_pull_alive(impl):
    base = ManualClock(100.0)
    src = clocked_engine(base, 4)
    dst = clocked_engine(SkewedClock(base, offset=250.0), 8)
    kept, kept_prompt = start(src, 11, SAMPLED, 2)
    dropped, dropped_prompt = start(src, 9, GREEDY, 2, salt=5)
    pulls = {rid: impl.export_held(src, rid, lease_s=30.0) for rid in (kept, dropped)}
    for pulled in pulls.values():
        impl.start_pull(dst, pulled)
    offset = estimate_clock_offset(dst.clock, src.clock)
    for _ in range(18):  # 90 s in steps of lease // 6 = 5 s; only `kept` is beaten for
        base.advance(5.0)
        acked = impl.heartbeat(src, [pulls[kept].snapshot.snapshot_id])
        pulls[kept] = dataclasses.replace(pulls[kept], expires_at=acked[pulls[kept].snapshot.snapshot_id])
        impl.reap_expired(src)
        check_pool(src)
    assert lease_of(src, pulls[kept]).state == LeaseState.ACTIVE, "heartbeats kept the lease alive for 90 s"
    assert lease_of(src, pulls[dropped]).state == LeaseState.EXPIRED, "the lease nobody beat for expired"
    got = {
        rid: impl.finish_pull(dst, src, pulls[rid], clock_offset=offset, policy="recompute") for rid in pulls
    }
    assert got == {kept: "imported", dropped: "recomputed"}, f"got {got}"
    out = dst.run_until_done()
    assert out[kept] == reference_output(kept_prompt, SAMPLED) and out[dropped] == reference_output(
        dropped_prompt, GREEDY
    )
    check_pool(src)


@task5
@pytest.mark.parametrize("first_in_time", [True, False])
def test_a_second_reader_of_one_handoff_never_runs_it(impl, first_in_time):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl, lease_s=10.0)
    b, c = clocked_engine(clock, 4), clocked_engine(clock, 8)
    impl.start_pull(b, pulled)
    impl.start_pull(c, pulled)  # a confused router sent the same handoff twice
    if not first_in_time:
        clock.advance(10.0)
        impl.reap_expired(src)
    first = impl.finish_pull(b, src, pulled, margin_s=0.0, policy="recompute")
    assert first == ("imported" if first_in_time else "recomputed"), (
        f"the first reader owns it, got {first!r}"
    )
    second = impl.finish_pull(c, src, pulled, margin_s=0.0, policy="recompute")
    assert second == "failed" and rid not in c.requests and rid in c.failed, (
        f"the second reader must drop it whatever its policy (recomputing would run it twice), got {second!r}"
    )
    assert c.usage == 0.0, "and give back the blocks it claimed"
    check_pool(b)
    check_pool(c)
    assert b.run_until_done()[rid] == reference_output(prompt, SAMPLED)


@task5
@pytest.mark.parametrize("policy", ["recompute", "fail"])
@pytest.mark.parametrize("where", ["read", "write", "admission"])
def test_a_failure_after_the_claim_is_a_load_failure_and_leaks_nothing(impl, monkeypatch, policy, where):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    dst = clocked_engine(clock, 8)
    impl.start_pull(dst, pulled)

    def broken(*args, **kwargs):
        raise ConnectionError(f"the {where} failed")

    target = {
        "read": (src.kv_cache, "read_raw"),
        "write": (dst.kv_cache, "write_raw"),
        "admission": (dst, "admit_running"),
    }
    monkeypatch.setattr(*target[where], broken)
    outcome = impl.finish_pull(dst, src, pulled, policy=policy)
    monkeypatch.undo()
    assert outcome == {"recompute": "recomputed", "fail": "failed"}[policy], (
        f"a failed {where} is a load failure handled by the policy {policy!r}, got {outcome!r}"
    )
    assert lease_of(src, pulled).state == LeaseState.COMMITTED, "the source is notified whatever happened"
    check_pool(src)
    check_pool(dst)
    if policy == "recompute":
        assert dst.requests[rid].status == RequestStatus.WAITING and not dst.requests[rid].block_table
        assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED)
    else:
        assert rid in dst.failed and dst.usage == 0.0, "dropped, every claimed block given back"


@task5
def test_finish_pull_rejects_what_it_cannot_finish(impl):
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    dst = clocked_engine(clock, 8)
    with pytest.raises(ValueError):
        impl.finish_pull(dst, src, pulled)  # never started here
    impl.start_pull(dst, pulled)
    state = engine_state(dst)
    with pytest.raises(ValueError):
        impl.finish_pull(dst, src, pulled, policy="retry")
    assert_unchanged(state, engine_state(dst), "a finish_pull with an unknown policy")
    assert lease_of(src, pulled).state == LeaseState.ACTIVE, "and the source is not notified"


@task5
@pytest.mark.parametrize("policy", ["fail", "recompute"])
def test_finishing_a_pull_twice_is_refused_and_harms_nothing(impl, policy):
    """A replayed completion: the request is no longer waiting for its K/V (it runs, or it waits to
    recompute), so a second ``finish_pull`` is a ValueError that changes nothing on either engine."""
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)
    dst = clocked_engine(clock, 8)
    impl.start_pull(dst, pulled)
    if policy == "recompute":
        clock.advance(26.0)  # 126 s: within the 5 s margin of 130: declined, the request waits to recompute
        assert impl.finish_pull(dst, src, pulled, policy=policy) == "recomputed"
    else:
        assert impl.finish_pull(dst, src, pulled, policy=policy) == "imported"
    state, src_state = engine_state(dst), engine_state(src)
    late = src.leases.late_notifications
    with pytest.raises(ValueError):
        impl.finish_pull(dst, src, pulled, policy=policy)
    assert_unchanged(state, engine_state(dst), "finishing the same pull twice")
    assert_unchanged(src_state, engine_state(src), "finishing the same pull twice (the source)")
    assert rid in dst.requests and rid not in dst.failed, "the request finished the first time lives on"
    assert src.leases.late_notifications == late, "and the source is not notified again"
    check_pool(dst)
    assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED)


@task5
def test_the_reader_declines_by_the_deadline_it_was_handed(impl):
    """The reader knows ``params.expires_at``, not the source's lease table: a heartbeat it did not
    hear about does not save a read that starts within the margin of the deadline it knows."""
    src, clock, rid, prompt, neighbour, pulled, before = held_case(impl)  # deadline 130
    dst = clocked_engine(clock, 8)
    impl.start_pull(dst, pulled)
    clock.advance(20.0)
    impl.heartbeat(src, [pulled.snapshot.snapshot_id])  # 120 s: the source's lease now runs to 140
    clock.advance(6.0)  # 126 s: 4 s before the 130 the reader knows, 14 s before the real 140
    assert impl.finish_pull(dst, src, pulled, margin_s=5.0, policy="recompute") == "recomputed", (
        "within margin_s of params.expires_at the read is declined, whatever the source's lease says"
    )
    check_pool(dst)
    assert dst.run_until_done()[rid] == reference_output(prompt, SAMPLED)


@task5
def test_a_replayed_handoff_after_a_round_trip_is_refused(impl):
    clock = ManualClock(100.0)
    a, b, c = clocked_engine(clock, 4), clocked_engine(clock, 4), clocked_engine(clock, 8)
    rid, prompt = start(a, 10, SAMPLED, 2)
    first = impl.export_held(a, rid)
    impl.start_pull(b, first)
    assert impl.finish_pull(b, a, first) == "imported"  # A -> B
    b.step()
    back = impl.export_held(b, rid)
    impl.start_pull(a, back)
    assert impl.finish_pull(a, b, back) == "imported"  # B -> A
    assert a.requests[rid].epoch == first.snapshot.epoch + 2, "two moves: two epochs on"
    state = engine_state(b)
    with pytest.raises(SnapshotError):
        impl.start_pull(b, first)  # the old A -> B handoff again: B has seen the request further on
    assert_unchanged(state, engine_state(b), "refusing a stale handoff")
    impl.start_pull(c, first)  # C has never seen it: only the source can tell
    assert impl.finish_pull(c, a, first, policy="recompute") == "failed" and rid not in c.requests
    assert a.run_until_done()[rid] == reference_output(prompt, SAMPLED), "A -> B -> A: as never-moved"


# ---------------------------------------------------------------- the whole protocol under random clocks
def _refusal(dst: Engine, pulled: PullParams):
    """The error start_pull must raise, or None: validation (SnapshotError) comes before the claim."""
    snap = pulled.snapshot
    peak = math.ceil((len(snap.prompt_token_ids) + snap.sampling_params.max_tokens - 1) / dst.block_size)
    if (
        snap.request_id in dst.requests
        or dst.epochs.get(snap.request_id, 0) > snap.epoch
        or dst.block_size % pulled.remote_block_size
        or pulled.kv_layout != dst.kv_layout
        or peak > dst.num_blocks
    ):
        return SnapshotError
    if math.ceil((snap.num_computed_tokens + 1) / dst.block_size) > dst.block_pool.num_free:
        return OutOfBlocksError
    return None


@task5
# Derandomized: the same examples every run, so a grade never depends on the draw; no example database
# shared with mutant runs; no shrinking (a failing example is reported as drawn, its draws labelled:
# shrinking one of these takes minutes). Every refusal the property meets is predicted by its own oracle.
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(data=st.data())
def test_random_clocks_and_interleavings_keep_every_promise(impl, data):
    """Engines with their own clocks (offsets, drift: a reader's offset estimate goes stale), random
    exports, pulls, heartbeats, expiry and steps: never a request live on two engines, never a block both free and held, never a late read
    imported, every request finished once as never-moved (or failed, under policy 'fail')."""
    base = ManualClock(0.0)
    sizes = data.draw(st.permutations([2, 4, 8]), label="block sizes")
    engines = []
    for i, bs in enumerate(sizes):
        clock = SkewedClock(
            base,
            offset=data.draw(st.sampled_from([-500.0, 0.0, 37.5]), label=f"offset {i}"),
            rate=data.draw(st.sampled_from([0.5, 1.0, 2.0]), label=f"rate {i}"),
        )
        blocks = data.draw(st.sampled_from([16 // bs + 3, 160 // bs]), label=f"blocks {i}")
        engines.append(clocked_engine(clock, bs, num_blocks=blocks))
    expected = {}
    for i, params in enumerate([SAMPLED, GREEDY, NEIGHBOUR_PARAMS[1]]):
        prompt = make_prompt(5 + 3 * i, salt=50 + i)
        expected[engines[i].add_request(prompt, params)] = (prompt, params)
    transit: dict[str, tuple[PullParams, int, list]] = {}  # exported, not started: (params, source, K/V)
    flight: dict[str, tuple[PullParams, int, list, int, float]] = {}  # started: + (reader, offset)

    def finish(sid: str, policy: str, margin: float, error: float = 0.0) -> None:
        pulled, s, kv, d, offset = flight.pop(sid)
        offset += error  # the handshake's estimate can be wrong too (an asymmetric round trip)
        rid = pulled.snapshot.request_id
        reaped = engines[s].leases.get(sid).state == LeaseState.EXPIRED  # freed before the read began
        outcome = impl.finish_pull(
            engines[d], engines[s], pulled, clock_offset=offset, margin_s=margin, policy=policy
        )
        state = engines[s].leases.get(sid).state
        assert state in (LeaseState.COMMITTED, LeaseState.LATE), (
            f"the reader must notify the source, lease {state}"
        )
        if outcome == "imported":
            assert not reaped and state == LeaseState.COMMITTED, "a read whose lease had expired was imported"
            assert_holds_the_kv(engines[d], rid, kv, "an imported read")
        else:
            assert outcome == {"recompute": "recomputed", "fail": "failed"}[policy], (
                f"{policy}: got {outcome!r}"
            )

    for engine in engines:
        engine.step()
    ops = ["step", "step", "export", "export", "start", "start", "start", "heartbeat", "finish", "finish"]
    ops += ["advance", "advance", "add"]
    for _ in range(data.draw(st.integers(10, 30), label="operations")):
        op = data.draw(st.sampled_from(ops), label="op")
        i = data.draw(st.integers(0, 2), label="engine")
        if op == "step":
            engines[i].step()
        elif op == "add" and len(expected) < 7:  # crowd an engine: preemptions, pulls without room
            prompt = make_prompt(data.draw(st.integers(6, 14), label="prompt"), salt=len(expected) + 60)
            params = NEIGHBOUR_PARAMS[len(expected) % 3]
            expected[engines[i].add_request(prompt, params)] = (prompt, params)
        elif op == "export" and engines[i].running:
            rid = data.draw(st.sampled_from([r.request_id for r in engines[i].running]), label="rid")
            kv = logical_kv(engines[i], rid)
            pulled = impl.export_held(
                engines[i], rid, lease_s=data.draw(st.sampled_from([6.0, 30.0]), label="lease")
            )
            transit[pulled.snapshot.snapshot_id] = (pulled, i, kv)
        elif op == "start" and transit:
            sid = data.draw(st.sampled_from(sorted(transit)), label="handoff")
            pulled, s, kv = transit[sid]
            dst, want = engines[i], _refusal(engines[i], pulled)
            if want is not None:
                state = engine_state(dst)
                with pytest.raises(want):
                    impl.start_pull(dst, pulled)
                assert_unchanged(state, engine_state(dst), "a refused start_pull")
            else:
                impl.start_pull(dst, pulled)
                del transit[sid]
                flight[sid] = (pulled, s, kv, i, estimate_clock_offset(dst.clock, engines[s].clock))
        elif op == "heartbeat" and flight:
            sid = data.draw(st.sampled_from(sorted(flight)), label="beat")
            pulled, s, kv, d, offset = flight[sid]
            acked = impl.heartbeat(engines[s], [sid])
            if sid in acked:
                assert acked[sid] >= pulled.expires_at, "a heartbeat never brings a deadline closer"
                flight[sid] = (dataclasses.replace(pulled, expires_at=acked[sid]), s, kv, d, offset)
        elif op == "finish" and flight:
            sid = data.draw(st.sampled_from(sorted(flight)), label="finish")
            finish(
                sid,
                data.draw(st.sampled_from(["recompute", "fail"]), label="policy"),
                data.draw(st.sampled_from([0.0, 5.0]), label="margin"),
                data.draw(st.sampled_from([0.0, 0.0, -50.0, 50.0]), label="offset error"),
            )
        elif op == "advance":  # time passes; every source reaps what expired (vLLM: on every step)
            base.advance(data.draw(st.sampled_from([2.0, 8.0, 40.0]), label="seconds"))
            for engine in engines:
                impl.reap_expired(engine)
        live = [rid for e in engines for rid in e.requests]
        assert len(live) == len(set(live)), f"a request is live on two engines: {sorted(live)}"
        for engine in engines:
            check_pool(engine)
    for sid in sorted(flight):
        finish(sid, "recompute", 0.0)
    base.advance(100.0)  # every lease still held runs out: the handoffs left are read late, into the
    for engine in engines:  # blocks-of-8 engine (8 is a multiple of every source's block size)
        impl.reap_expired(engine)
        engine.run_until_done()
    for sid, (pulled, s, kv) in sorted(transit.items()):
        dst = next(e for e in engines if e.block_size == 8)
        impl.start_pull(dst, pulled)
        flight[sid] = (pulled, s, kv, engines.index(dst), estimate_clock_offset(dst.clock, engines[s].clock))
        finish(sid, "recompute", 0.0)
        dst.run_until_done()
    finished = [rid for e in engines for rid in e.finished]
    failed = [rid for e in engines for rid in e.failed]
    assert sorted(finished + failed) == sorted(expected), (
        f"every request ends exactly once (finished {sorted(finished)}, failed {sorted(failed)}; a request "
        "that left by export_held is not in its source's engine.finished)"
    )
    for engine in engines:
        assert engine.usage == 0.0, f"all done and every lease settled: usage must be 0.0, got {engine.usage}"
        for rid, out in engine.finished.items():
            assert out == reference_output(*expected[rid]), f"{rid} must finish as never-moved"

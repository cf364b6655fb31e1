"""Demo: move a live request from engine A (block size 4) to engine B (block size 8) mid-decode, then
hand two requests over the way vLLM's NIXL pull does (task 5): one read in time, one that raced expiry.

    python phase-15-disaggregated-serving/labs/lab-01-kv-handoff/tools/demo.py     (part of `make demo`)

Prints the migrated and never-moved outputs side by side, A's usage before and after the export, the
blocks B gave the request; then each pull's lease, clocks and outcome. Uses solution.py unless LAB_IMPL
says otherwise.
"""

from __future__ import annotations

import random
from pathlib import Path

from labkit import impl as labimpl
from minivllm import Engine, ManualClock, SamplingParams, SkewedClock, TinyDecoder, estimate_clock_offset

HERE = Path(__file__).resolve().parents[1]  # the lab folder


def main() -> None:
    impl = labimpl.load_module(labimpl.impl_path_for(HERE))
    model = TinyDecoder()
    params = SamplingParams(temperature=0.9, top_k=24, max_tokens=10, seed=7)
    prompt = [(7 * i + 3) % model.config.vocab_size for i in range(13)]

    never_moved = Engine(model, 32, 16)
    rid = never_moved.add_request(prompt, params)
    reference = never_moved.run_until_done()[rid]

    a, b = Engine(model, 24, 4), Engine(model, 16, 8)
    for engine in (a, b):  # a long-running server's free list is scattered, not 0, 1, 2, ...
        ids = engine.block_pool.allocate(engine.num_blocks)
        random.Random(engine.block_size).shuffle(ids)
        engine.block_pool.free(ids)
    neighbour_a = a.add_request(prompt[:5], SamplingParams(max_tokens=12))
    neighbour_b = b.add_request(prompt[3:9], SamplingParams(temperature=1.0, max_tokens=12, seed=3))
    rid = a.add_request(prompt, params)
    for _ in range(4):  # prefill + 3 decodes on A
        a.step()
        b.step()
    request = a.requests[rid]
    print(
        f"request {rid}: {len(prompt)}-token prompt, seeded sampling, {len(request.output_token_ids)} tokens so far"
    )
    print(
        f"  on A (block size {a.block_size}): blocks {request.block_table}, {request.num_computed_tokens} tokens of K/V"
    )
    usage_before = a.usage
    snapshot = impl.migrate(a, b, rid)
    moved = b.requests[rid]
    print(
        f"  A usage: {usage_before:.3f} before the export -> {a.usage:.3f} after (only the neighbour's blocks)"
    )
    print(
        f"  shipped {snapshot.kv.numel() * snapshot.kv.element_size()} bytes of K/V, "
        f"kv shape {list(snapshot.kv.shape)} (tokens, layers, K/V, kv heads, head dim), no block ids"
    )
    print(f"  on B (block size {b.block_size}): blocks {moved.block_table}, B usage {b.usage:.3f}")
    outputs = {**a.run_until_done(), **b.run_until_done()}
    migrated = outputs[rid]
    print("\n  token  never-moved  migrated")
    for i, (want, got) in enumerate(zip(reference, migrated, strict=True)):
        where = "A" if i < 4 else "B"
        print(
            f"  {i:>4}  {want:>11}  {got:>8}   (sampled on {where}){'' if want == got else '   <-- DIFFERENT'}"
        )
    print(
        f"\n  identical: {migrated == reference}; neighbours finished: {neighbour_a in a.finished and neighbour_b in b.finished}"
    )
    print(f"  after everything finished: A usage {a.usage:.1f}, B usage {b.usage:.1f}")
    if migrated != reference:
        raise SystemExit("the migration was visible in the output")
    pull_demo(impl, model, params, prompt, reference)


def pull_demo(
    impl, model: TinyDecoder, params: SamplingParams, prompt: list[int], reference: list[int]
) -> None:
    """Task 5: the source finishes the request and holds its blocks under a lease; the reader reads them."""
    base = ManualClock(100.0)
    p, d = Engine(model, 24, 4, clock=base), Engine(model, 16, 8, clock=SkewedClock(base, offset=-1000.0))
    print(
        "\npull mode (task 5): P (block size 4) finishes the request and holds its blocks; D (block size 8,"
    )
    print("its clock 1000 s behind P's) claims its own blocks and reads P's in place, one-sided")
    ok = p.add_request(prompt, params)
    late = p.add_request(prompt, params)
    for _ in range(4):
        p.step()
    offset = estimate_clock_offset(d.clock, p.clock)  # the handshake's estimate of P minus D
    pulls = {rid: impl.export_held(p, rid, lease_s=10.0) for rid in (ok, late)}
    print(
        f"  P exports both under 10 s leases (deadline {pulls[ok].expires_at:.1f} on P's clock); P usage "
        f"{p.usage:.3f}: the held blocks stay allocated"
    )
    print(f"  D's handshake estimates P's clock minus its own at {offset:+.1f} s")
    for pulled in pulls.values():
        impl.start_pull(d, pulled)
    print(
        f"  D claims blocks for both before any byte arrives (waiting for remote KV): D usage {d.usage:.3f}"
    )
    base.advance(3.0)
    got = impl.finish_pull(d, p, pulls[ok], clock_offset=offset, margin_s=5.0, policy="recompute")
    print(f"  {ok}: read at P's {p.clock():.1f} s -> {got}; P frees its blocks on the notification")
    base.advance(7.0)  # P's clock reaches the deadline of the second lease
    held = set(pulls[late].remote_block_ids)
    reaped = impl.reap_expired(p)
    newcomer = p.add_request(
        [(5 * i + 1) % model.config.vocab_size for i in range(16)], SamplingParams(max_tokens=2)
    )
    p.step()
    reused = len(held & set(p.requests[newcomer].block_table))
    print(
        f"  {late}: at {p.clock():.1f} s P reaps {len(reaped)} expired lease and frees its blocks; a newcomer "
        f"writes its own K/V into {reused} of them"
    )
    stale = offset - 20.0  # the reader's estimate has gone 20 s stale: its deadline check passes
    got = impl.finish_pull(d, p, pulls[late], clock_offset=stale, margin_s=5.0, policy="recompute")
    print(
        f"  {late}: D believes P is at {d.clock() + stale:.1f} s and reads anyway -> P answers the notification"
    )
    print(
        f"    late (vLLM's P would only log it; counted: {p.leases.late_notifications}) -> {got}, never imported"
    )
    out = d.run_until_done()
    p.run_until_done()
    same = out.get(ok) == reference and out.get(late) == reference
    print(f"  both finish as never-moved on D: {same}; P usage {p.usage:.1f}, D usage {d.usage:.1f}")
    if not same:
        raise SystemExit("a pull was visible in the output")


if __name__ == "__main__":
    main()

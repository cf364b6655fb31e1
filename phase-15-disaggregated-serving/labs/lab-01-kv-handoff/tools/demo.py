"""Demo: move a live request from engine A (block size 4) to engine B (block size 8) mid-decode.

    python phase-15-disaggregated-serving/labs/lab-01-kv-handoff/demo.py     (part of `make demo`)

Prints the migrated and never-moved outputs side by side, A's usage before and after the export, and
the blocks B gave the request. Uses solution.py unless LAB_IMPL says otherwise.
"""

from __future__ import annotations

import random
from pathlib import Path

from labkit import impl as labimpl
from minivllm import Engine, SamplingParams, TinyDecoder

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


if __name__ == "__main__":
    main()

"""Test-side oracles shared by lab-01's spec files (test_*.py): the model, the sampling parameters, the
prompts, the never-moved output every handoff is compared with, and the block-accounting checks. Not
student code, not graded."""

from __future__ import annotations

import functools
import random

import torch

from minivllm import Engine, ModelConfig, SamplingParams, TinyDecoder

CONFIG = ModelConfig()
MODEL = TinyDecoder(CONFIG)
GREEDY = SamplingParams(max_tokens=6)
SAMPLED = SamplingParams(temperature=0.9, top_k=24, max_tokens=6, seed=7)
PARAMS = {"greedy": GREEDY, "sampled": SAMPLED}


def make_prompt(n: int, salt: int = 1) -> list[int]:
    return [(salt * 37 + i * 11 + 5) % CONFIG.vocab_size for i in range(n)]


@functools.cache
def _reference(prompt: tuple[int, ...], params: SamplingParams) -> tuple[int, ...]:
    engine = Engine(MODEL, 64, 16)
    rid = engine.add_request(list(prompt), params)
    return tuple(engine.run_until_done()[rid])


def reference_output(prompt: list[int], params: SamplingParams) -> list[int]:
    """The never-moved output: the request alone on a fresh engine (no prefix caching)."""
    return list(_reference(tuple(prompt), params))


# Neighbours: a mix of greedy and seeded sampling, so a move that disturbs anyone shows up.
NEIGHBOUR_PARAMS = [
    SamplingParams(max_tokens=5),
    SamplingParams(temperature=1.0, max_tokens=7, seed=11),
    SamplingParams(temperature=0.7, top_k=8, max_tokens=4, seed=12),
]


def make_engine(block_size: int = 4, num_blocks: int | None = None, model: TinyDecoder = MODEL) -> Engine:
    # Default: room for every request a test runs, so nothing is preempted unless a test wants it.
    return Engine(model, num_blocks or 160 // block_size + 8, block_size)


def step(engine: Engine, times: int) -> None:
    for _ in range(times):
        engine.step()


def kv_at(engine: Engine, block_table: list[int], position: int) -> torch.Tensor:
    """K/V of one logical position, [layers, 2, kv_heads, head_dim], read through a block table."""
    bs = engine.block_size
    return engine.kv_cache.kv[block_table[position // bs], position % bs].clone()


def logical_kv(engine: Engine, rid: str) -> list[torch.Tensor]:
    request = engine.requests[rid]
    return [kv_at(engine, request.block_table, p) for p in range(request.num_computed_tokens)]


def fragment(engine: Engine) -> None:
    """Scramble the free list (a seeded shuffle, the same every run): later allocations get
    non-contiguous, out-of-order physical blocks, as they do in a long-running server."""
    ids = engine.block_pool.allocate(engine.block_pool.num_free)
    random.Random(0).shuffle(ids)
    engine.block_pool.free(ids)


def check_pool(engine: Engine) -> None:
    """Block accounting: free + used == total, no id twice, and the used blocks are exactly the union
    of the live requests' block tables and the blocks active leases hold (a block held by nobody is
    a leak; a block both free and held is a double booking)."""
    pool = engine.block_pool
    free = list(pool.free_block_ids)
    assert len(free) == len(set(free)), f"a block is on the free list twice: {free}"
    assert pool.num_free + pool.num_used == pool.num_blocks, (
        f"free ({pool.num_free}) + used ({pool.num_used}) must equal total ({pool.num_blocks})"
    )
    held = [b for r in engine.requests.values() for b in r.block_table] + engine.leases.held_block_ids
    assert len(held) == len(set(held)), f"two live requests (or leases) share a block: {held}"
    used = {b for b in range(pool.num_blocks) if pool.is_used(b)}
    assert used == set(held), (
        f"used blocks must be exactly the live requests' blocks; leaked {sorted(used - set(held))}, "
        f"held but free {sorted(set(held) - used)}"
    )
    assert not used & set(free), f"blocks both used and free: {sorted(used & set(free))}"


def engine_state(engine: Engine) -> dict:
    """What a failed import (or a rejected call) must leave as it was: the free blocks as a set, the
    live requests and queues, and the K/V of every block a live request holds (what free blocks
    contain, and the free list's order, are nobody's business)."""
    held = sorted(b for r in engine.requests.values() for b in r.block_table)
    return {
        "free blocks": sorted(engine.block_pool.free_block_ids),
        "usage": engine.usage,
        "requests": {
            rid: (
                r.status,
                r.all_token_ids,
                r.num_computed_tokens,
                list(r.block_table),
                None if r.generator is None else r.generator.get_state(),
            )
            for rid, r in engine.requests.items()
        },
        "running": [r.request_id for r in engine.running],
        "waiting": [r.request_id for r in engine.waiting],
        "held kv": engine.kv_cache.kv[torch.tensor(held, dtype=torch.long)].clone(),
    }


def assert_unchanged(before: dict, after: dict, what: str) -> None:
    for key in ("free blocks", "usage", "running", "waiting"):
        assert before[key] == after[key], (
            f"{what} must leave the {key} unchanged: {before[key]} -> {after[key]}"
        )
    assert before["requests"].keys() == after["requests"].keys(), (
        f"{what} must leave the requests unchanged: {sorted(before['requests'])} -> {sorted(after['requests'])}"
    )
    for rid, (status, tokens, computed, table, gen) in before["requests"].items():
        s2, t2, c2, tb2, g2 = after["requests"][rid]
        same_gen = (gen is None and g2 is None) or (
            gen is not None and g2 is not None and torch.equal(gen, g2)
        )
        assert (status, tokens, computed, table) == (s2, t2, c2, tb2) and same_gen, (
            f"{what} changed request {rid}: {(status, computed, table)} -> {(s2, c2, tb2)}"
        )
    assert torch.equal(before["held kv"], after["held kv"]), (
        f"{what} must not write into blocks that live requests hold"
    )


def start(
    engine: Engine, prompt_len: int, params: SamplingParams, steps: int, salt: int = 1
) -> tuple[str, list[int]]:
    prompt = make_prompt(prompt_len, salt)
    rid = engine.add_request(prompt, params)
    step(engine, steps)
    return rid, prompt

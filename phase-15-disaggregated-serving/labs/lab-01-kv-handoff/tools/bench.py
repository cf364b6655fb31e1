"""Benchmark (not a test): what a KV handoff costs, measured in one run on this machine.

    python phase-15-disaggregated-serving/labs/lab-01-kv-handoff/bench.py
    LAB_IMPL=starter python .../bench.py      # bench your own implementation once it passes

1. Snapshot throughput: export + import of one long request, as a ratio to a plain tensor copy of the
   same bytes (target >= 0.5: a handoff should cost at most two memcpys, one out, one in).
2. Ship versus recompute, prompt lengths 128..2048 on the lab's tiny model: shipping = export +
   import; recompute = readmit_by_recompute + the step that recomputes every token. Also the link
   speed below which recompute would win (ship bytes over a network instead of memory).
"""

from __future__ import annotations

import os
import platform
import random
import time
from pathlib import Path

import torch

from labkit import impl as labimpl
from labkit.machine import cpu_model
from minivllm import Engine, ModelConfig, Request, SamplingParams, TinyDecoder

HERE = Path(__file__).resolve().parents[1]  # the lab folder

LENGTHS = (128, 256, 512, 1024, 2048)


def best_of(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def planted_request(engine: Engine, n: int, rid: str) -> None:
    """A running request with n computed tokens of random K/V, on scattered blocks (no prefill needed:
    throughput does not depend on what the numbers are)."""
    request = Request(rid, [1] * n, SamplingParams(max_tokens=2), [2])
    request.block_table = engine.block_pool.allocate(-(-n // engine.block_size))
    request.num_computed_tokens = n
    engine.kv_cache.kv[request.block_table] = torch.randn_like(engine.kv_cache.kv[request.block_table])
    engine.admit_running(request)


def throughput(impl) -> None:
    # A mid-size geometry (8 layers x 8 KV heads x 128 dims, fp32 = 64 KiB/token) so bytes, not
    # Python, dominate: 1000 tokens = 62.5 MiB per handoff.
    config = ModelConfig(
        hidden_size=128, num_layers=8, num_heads=8, num_kv_heads=8, head_dim=128, intermediate_size=128
    )
    model, n, bs = TinyDecoder(config), 1000, 16
    a, b = Engine(model, 80, bs), Engine(model, 80, bs)
    for engine in (a, b):  # scatter the free lists
        ids = engine.block_pool.allocate(engine.block_pool.num_free)
        random.Random(0).shuffle(ids)
        engine.block_pool.free(ids)
    planted_request(a, n, "bench")
    nbytes = n * config.kv_bytes_per_token
    where = {"engine": a}

    def handoff():  # one export + one import, alternating direction
        src = where["engine"]
        dst = b if src is a else a
        impl.import_request(dst, impl.export_request(src, "bench"))
        where["engine"] = dst

    src_buf = torch.randn(nbytes // 4)
    dst_buf = torch.empty_like(src_buf)
    handoff()  # warm up
    clone_s = best_of(src_buf.clone, 9)
    copy_s = best_of(lambda: dst_buf.copy_(src_buf), 9)
    handoff_s = best_of(handoff, 9)
    mib = nbytes / 2**20
    print(
        f"snapshot throughput: {n} tokens x {config.kv_bytes_per_token // 1024} KiB = {mib:.1f} MiB, block size {bs}"
    )
    for label, secs in (
        ("tensor clone (allocate + copy)", clone_s),
        ("copy_ into a preallocated tensor", copy_s),
        ("export + import (one handoff)", handoff_s),
    ):
        print(f"  {label:34s} {secs * 1e3:7.2f} ms  {nbytes / secs / 1e9:6.2f} GB/s")
    # A snapshot must own fresh memory (the source's blocks are reused), so the like-for-like plain copy
    # is clone(); copy_ into memory already paged in is the floor no handoff can reach.
    print(f"  ratio clone / handoff = {clone_s / handoff_s:.2f}   (target >= 0.5)")
    print(f"  ratio copy_ / handoff = {copy_s / handoff_s:.2f}   (memory bandwidth alone)")


def ship_vs_recompute(impl) -> None:
    config = ModelConfig()
    model = TinyDecoder(config)
    print(
        f"\nship vs recompute, lab model ({config.num_layers} layers, {config.kv_bytes_per_token} B of K/V per token), block size 16"
    )
    print(
        f"  {'prompt':>6}  {'ship bytes':>10}  {'ship ms':>8}  {'recompute ms':>12}  {'recompute/ship':>14}  {'recompute wins below':>20}"
    )
    ship_wins: dict[int, bool] = {}
    for n in LENGTHS:
        engine = Engine(model, 2 * (n // 16 + 2) + 4, 16)
        rid = engine.add_request(
            [(7 * i + 3) % config.vocab_size for i in range(n)], SamplingParams(max_tokens=4)
        )
        engine.step()  # the prefill both strategies want to avoid or redo

        def ship(engine=engine, rid=rid):
            impl.import_request(engine, impl.export_request(engine, rid))

        ship_s = best_of(ship, 15)
        snap = impl.export_request(engine, rid)
        t0 = time.perf_counter()
        impl.readmit_by_recompute(engine, snap)
        engine.step()  # recomputes every token, then samples
        recompute_s = time.perf_counter() - t0
        ship_bytes = snap.kv.numel() * snap.kv.element_size()
        break_even_mbps = ship_bytes * 8 / recompute_s / 1e6
        ship_wins[n] = ship_s < recompute_s
        print(
            f"  {n:>6}  {ship_bytes:>10}  {ship_s * 1e3:>8.3f}  {recompute_s * 1e3:>12.1f}  "
            f"{recompute_s / ship_s:>13.0f}x  {break_even_mbps:>15.1f} Mb/s"
        )
    span = f"{LENGTHS[0]}..{LENGTHS[-1]}"
    if all(ship_wins.values()):
        print(f"  crossover: none in {span}: shipping is faster at every length measured")
    elif not any(ship_wins.values()):
        print(f"  crossover: none in {span}: recompute is faster at every length measured")
    else:
        flips = [b for a, b in zip(LENGTHS, LENGTHS[1:], strict=False) if ship_wins[a] != ship_wins[b]]
        winners = ", ".join(f"{n}: {'ship' if w else 'recompute'}" for n, w in ship_wins.items())
        print(f"  crossover: the winner changes at {flips} tokens ({winners})")


def main() -> None:
    impl = labimpl.load_module(labimpl.impl_path_for(HERE))
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, python {platform.python_version()}; "
        f"LAB_IMPL={labimpl.lab_impl_setting()}"
    )
    throughput(impl)
    ship_vs_recompute(impl)


if __name__ == "__main__":
    main()

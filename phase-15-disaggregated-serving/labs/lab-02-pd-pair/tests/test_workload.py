"""The signature workload generator (given code; ungraded): streams, long prompts, timestamps."""

from __future__ import annotations

import asyncio

import pytest

from pdpair.load.workload import WorkloadConfig, run_workload
from pdpair.testing.fakes import FakeDecode


@pytest.mark.ungraded
def test_workload_runs_streams_and_long_prompts_with_fresh_prompts():
    async def go():
        async with FakeDecode(ttft_s=0.0, itl_s=0.001) as d:
            cfg = WorkloadConfig(streams=3, output_tokens=5, output_jitter=0, stream_stagger_s=0.0,
                                 long_every_s=0.4, long_prompt_tokens=50, duration_s=1.0)  # fmt: skip
            return await run_workload([d.url], "m", cfg), d

    samples, decode = asyncio.run(go())
    kinds = {s.kind for s in samples}
    assert kinds == {"short", "long"}, kinds
    assert all(s.status == 200 and s.error is None for s in samples), [s for s in samples if s.status != 200]
    assert all(len(s.arrivals) == 5 for s in samples if s.kind == "short"), (
        "every short stream yields 5 tokens"
    )
    prompts = [tuple(r.body["prompt"]) for r in decode.requests]
    assert len(set(prompts)) == len(prompts), "every request gets a fresh prompt (no prefix-cache hits)"


@pytest.mark.ungraded
def test_workload_jitter_and_stagger_keep_streams_out_of_lockstep():
    async def go():
        async with FakeDecode(ttft_s=0.0, itl_s=0.05) as d:
            cfg = WorkloadConfig(streams=3, output_tokens=6, output_jitter=3, stream_stagger_s=0.1,
                                 long_every_s=10.0, duration_s=0.6)  # fmt: skip
            return await run_workload([d.url], "m", cfg)

    samples = asyncio.run(go())
    lengths = [len(s.arrivals) for s in samples if s.kind == "short"]
    assert all(3 <= n <= 9 for n in lengths) and len(set(lengths)) > 1, f"6 +- 3 tokens, varied: {lengths}"
    starts = sorted(s.sent_at for s in samples)[:3]
    assert starts[2] - starts[0] >= 0.19, f"stream i starts i x 0.1 s late: {starts}"

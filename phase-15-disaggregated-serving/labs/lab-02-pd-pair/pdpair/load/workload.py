"""The signature workload: steady decode streams, with long prefills landing among them.

Closed-loop streams keep a decode batch busy (short prompt, long answer, ignore_eos); every
`long_every_s` a long prompt arrives. Colocated, that prefill shares a step with the decodes and their
inter-token gaps spike; disaggregated, it runs on the prefill instance and decode gaps stay flat.
Prompts are fresh random token ids per request, so the prefix cache cannot hide a prefill.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field

import aiohttp

from pdpair.load.client import stream_request


@dataclass(frozen=True)
class WorkloadConfig:
    streams: int = 6  # closed-loop decode streams
    short_prompt_tokens: int = 32
    output_tokens: int = 96  # mean answer length of a stream's request
    # each answer is output_tokens +- this (uniform), so the streams drift apart as real ones do
    output_jitter: int = 32
    stream_stagger_s: float = 0.3  # stream i starts i x this late, so the streams are not in lockstep
    long_prompt_tokens: int = 1500
    long_output_tokens: int = 8
    long_every_s: float = 6.0
    duration_s: float = 60.0
    vocab_size: int = 32000
    seed: int = 0
    request_timeout_s: float = 120.0


@dataclass
class Sample:
    kind: str  # "short" | "long"
    target: str
    status: int
    sent_at: float
    arrivals: list[float] = field(default_factory=list)
    error: str | None = None
    upstream: str | None = None  # the proxy's X-PD-Decode-Upstream: which server streamed it
    mode: str | None = None  # the proxy's X-PD-Mode
    prefill_ms: float | None = None  # the proxy's Server-Timing "prefill;dur=" (the prefill hop)


def server_timing(value: str | None) -> dict[str, float]:
    """``"prefill;dur=95.1, decode;dur=2.0"`` -> {"prefill": 95.1, "decode": 2.0} (entries without dur skipped)."""
    out = {}
    for entry in (value or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        for param in params:
            key, _, val = param.partition("=")
            if name and key == "dur":
                out[name] = float(val)
    return out


def _body(model: str, prompt: list[int], max_tokens: int) -> dict:
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
    }


async def run_workload(
    targets: list[str], model: str, cfg: WorkloadConfig, samples: list[Sample] | None = None
) -> list[Sample]:
    """Run the workload against `targets` (round-robin) and return one Sample per request, appended to
    ``samples`` (if given) as each request ends, so a progress bar can watch."""
    rng = random.Random(cfg.seed)
    rr = itertools.cycle(targets)
    samples = [] if samples is None else samples
    deadline = time.monotonic() + cfg.duration_s

    def prompt(n: int) -> list[int]:
        return [rng.randrange(3, cfg.vocab_size) for _ in range(n)]

    async def one(session: aiohttp.ClientSession, kind: str, n_prompt: int, n_out: int) -> None:
        target = next(rr)
        try:
            res = await stream_request(
                session, target, "/v1/completions", _body(model, prompt(n_prompt), n_out),
                timeout_s=cfg.request_timeout_s,
            )  # fmt: skip
            err = None if res.error is None else str(res.error)[:200]
            hops = server_timing(res.headers.get("Server-Timing"))
            samples.append(Sample(kind, target, res.status, res.sent_at, res.arrivals, err,
                                  res.headers.get("X-PD-Decode-Upstream"), res.headers.get("X-PD-Mode"),
                                  hops.get("prefill")))  # fmt: skip
        except (aiohttp.ClientError, TimeoutError) as exc:
            samples.append(Sample(kind, target, 0, time.monotonic(), [], f"{type(exc).__name__}: {exc}"))

    async def stream_loop(session: aiohttp.ClientSession, i: int) -> None:
        # Without jitter and stagger, identical streams batched together finish on the same step and send
        # their next prompts as one burst: every TTFT would then include the whole burst's prefill.
        await asyncio.sleep(i * cfg.stream_stagger_s)
        while time.monotonic() < deadline:
            n_out = cfg.output_tokens + rng.randint(-cfg.output_jitter, cfg.output_jitter)
            await one(session, "short", cfg.short_prompt_tokens, n_out)

    async def long_loop(session: aiohttp.ClientSession) -> None:
        pending = []
        await asyncio.sleep(cfg.long_every_s / 2)
        while time.monotonic() < deadline:
            pending.append(
                asyncio.create_task(one(session, "long", cfg.long_prompt_tokens, cfg.long_output_tokens))
            )
            await asyncio.sleep(cfg.long_every_s)
        await asyncio.gather(*pending)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(long_loop(session), *(stream_loop(session, i) for i in range(cfg.streams)))
    return samples

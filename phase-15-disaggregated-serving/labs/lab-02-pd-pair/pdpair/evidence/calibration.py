"""The calibration run: time a real vLLM CPU pair's steps at controlled compositions, for lab-03's twin.

One P/D pair is started (prefill on core 0 with vLLM's default token budget, decode on core 1 with
``--max-num-batched-tokens 64`` so a long prompt sent to it is chunked as in ``colocated-chunk64``),
warmed up, and driven through five short phases. Each phase chooses what the engine's steps carry, so
every timed step has a known composition (``fleetsim.fit``: prefill tokens, attention pairs, decode
sequences, joins); a step is read off the client's token arrival times on one instance (arrivals
closer than ``STEP_CLUSTER_S`` came from one step, and a step lasts from the previous step's end to
its own, the engine being busy throughout):

A. plain decode steps, batches of ``BATCHES`` sequences (decode): ``step_ms_fixed``, ``per_decode_seq_ms``,
   and the step-to-step jitter;
B. a 32-token prompt joining a running batch of 5 (decode, sent directly: a local prefill), and a
   handed-off 32-token request joining it (through the proxy: decode computes one token): the two join
   steps that set conditional P/D's tail;
C. a 1500-token prompt chunked into (64 - batch)-token chunks riding decode steps, batches 1, 3, 5:
   ``per_prefill_token_ms`` and ``per_prefill_pair_ms`` at every chunk position (chunked colocated's tail);
D. whole prompts of ``WHOLE_PROMPTS`` tokens in one step (prefill, default budget, one stream
   decoding beside them): ``per_prefill_token_sq_ms`` (a long step costs more per token);
E. first tokens on an idle pair through the lab's proxy, local and handed off:
   ``request_overhead_ms`` and ``link_latency_ms`` (nothing queued, so they cannot absorb queueing).

About a minute of load after the start-up (``make record`` runs it before recording; ``python
tools/calibrate_profile.py --live`` alone). Prompts are fresh random token ids (no prefix cache hit).
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field

import aiohttp

from fleetsim.fit import FirstToken, Step
from fleetsim.profile import chunk_pairs
from pdpair.load.client import stream_request

STEP_CLUSTER_S = 0.005  # token arrivals closer than this on one instance came from one step
DECODE_BUDGET = 64  # decode's --max-num-batched-tokens during calibration (colocated-chunk64's budget)
SHORT = 32  # the workload's short prompt
LONG = 1500  # the workload's long prompt
BATCHES = (1, 2, 3, 4, 6, 8)  # the workload runs 1-7 sequences per decoding instance
WHOLE_PROMPTS = (64, 256, 512, 1024, 1500)
CHUNK_BATCHES = (1, 3, 5)
JOIN_BATCH = 5
PROBES = 12  # per kind of join or idle first token
BACKGROUND_TOKENS = (
    1800  # a background stream's answer: outlasts any phase (prompt + answer <= max_model_len 2048)
)


@dataclass
class Timed:
    """One request as the client saw it (times: time.monotonic())."""

    tag: str
    prompt_tokens: int
    sent: float
    arrivals: list[float] = field(default_factory=list)
    status: int = 0


class Driver:
    """Sends the calibration's requests: fresh random prompts, streamed, every token timestamped."""

    def __init__(self, session: aiohttp.ClientSession, model: str, seed: int = 7) -> None:
        self.session, self.model, self.rng = session, model, random.Random(seed)

    async def send(self, url: str, tag: str, prompt_tokens: int, max_tokens: int) -> Timed:
        prompt = [self.rng.randrange(3, 32000) for _ in range(prompt_tokens)]
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                "ignore_eos": True, "stream": True}  # fmt: skip
        res = await stream_request(self.session, url, "/v1/completions", body, timeout_s=180)
        if res.status != 200 or res.error is not None or not res.arrivals:
            raise RuntimeError(f"calibration request {tag} to {url} failed: {res.status} {res.error}")
        return Timed(tag, prompt_tokens, res.sent_at, res.arrivals, res.status)


class Recorder:
    """Background streams whose token times survive cancellation (the driver's ``send`` returns only
    at the end of a request)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.streams: list[Timed] = []
        self._tasks: list[asyncio.Task] = []

    async def _one(self, url: str, tag: str) -> None:
        d = self.driver
        prompt = [d.rng.randrange(3, 32000) for _ in range(SHORT)]
        body = {"model": d.model, "prompt": prompt, "max_tokens": BACKGROUND_TOKENS, "temperature": 0.0,
                "ignore_eos": True, "stream": True}  # fmt: skip
        t = Timed(tag, SHORT, time.monotonic())
        self.streams.append(t)
        async with d.session.post(url + "/v1/completions", json=body) as resp:
            t.status = resp.status
            if resp.status != 200:
                raise RuntimeError(
                    f"calibration: a background stream got {resp.status}: {(await resp.read())[:300]!r}"
                )
            buf = b""
            async for chunk in resp.content.iter_any():
                now = time.monotonic()
                *events, buf = (buf + chunk).split(b"\n\n")
                t.arrivals.extend(now for e in events if b'"text"' in e)

    def start(self, url: str, n: int) -> None:
        self._tasks += [asyncio.ensure_future(self._one(url, f"bg{i}")) for i in range(n)]

    async def settle(self, n: int, timeout_s: float = 300.0) -> None:
        """Wait until every background stream has streamed ``n`` tokens (all are decoding); RuntimeError
        if one ends (it must outlast the phase) or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while len(self.streams) < len(self._tasks) or any(len(t.arrivals) < n for t in self.streams):
            for task in self._tasks:
                if task.done():
                    exc = task.exception()
                    raise RuntimeError(f"calibration: a background stream ended early: {exc!r}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError("calibration: background streams did not start decoding in time")
            await asyncio.sleep(0.02)

    async def stop(self) -> list[Timed]:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        out, self.streams = self.streams, []
        return out


def clusters(requests: list[Timed]) -> list[tuple[float, list[tuple[Timed, int]]]]:
    """The steps of one instance: (end time, [(request, token index) streamed in it]), in order."""
    tokens = sorted((t, r, i) for r in requests for i, t in enumerate(r.arrivals))
    out: list[tuple[float, list]] = []
    for t, r, i in tokens:
        if not out or t - out[-1][0] > STEP_CLUSTER_S:
            out.append((t, []))
        out[-1][1].append((r, i))
    return out


def plain_steps(requests: list[Timed], batch: int | None = None) -> list[Step]:
    """Steps in which every token was a decode (no first token), ``batch`` of them when given."""
    steps = clusters(requests)
    out = []
    for (a, _), (b, toks) in zip(steps, steps[1:], strict=False):
        decodes = sum(i > 0 for _, i in toks)
        if decodes == len(toks) and (batch is None or decodes == batch):
            out.append(Step((b - a) * 1e3, 0, 0, decodes, 0, "plain decode step"))
    return out


def join_step(requests: list[Timed], probe: Timed, tokens: int, pairs: int, label: str) -> Step | None:
    """The step that streamed ``probe``'s first token, if it carried no other first token: ``tokens``
    prompt tokens (``pairs`` attention pairs) computed in it, one join."""
    steps = clusters([*requests, probe])
    for (a, _), (b, toks) in zip(steps, steps[1:], strict=False):
        if any(r is probe and i == 0 for r, i in toks):
            if sum(i == 0 for _, i in toks) != 1:
                return None
            return Step((b - a) * 1e3, tokens, pairs, sum(i > 0 for _, i in toks), 1, label)
    return None


def chunk_steps(requests: list[Timed], probe: Timed, budget: int, label: str) -> list[Step]:
    """The steps a long ``probe`` prompt was chunked over on an instance with token budget ``budget``:
    walking back from the step that streamed its first token, each earlier step carried (budget -
    its decodes) prompt tokens until the prompt is accounted for. [] when the walk does not add up
    (another prompt shared the steps)."""
    steps = clusters([*requests, probe])
    ends = [b for b, _ in steps]
    k = next((j for j, (_, toks) in enumerate(steps) if any(r is probe and i == 0 for r, i in toks)), None)
    if k is None or k == 0:
        return []
    chunks, seen, j = [], 0, k
    while seen < probe.prompt_tokens and j >= 1:
        toks = steps[j][1]
        firsts = sum(i == 0 for _, i in toks) - (j == k)
        if firsts:
            return []
        decodes = sum(i > 0 for _, i in toks)
        c = min(budget - decodes, probe.prompt_tokens - seen)
        chunks.append(((ends[j] - ends[j - 1]) * 1e3, c, decodes, j == k))
        seen += c
        j -= 1
    if seen != probe.prompt_tokens or ends[j] < probe.sent:
        return []  # the first chunk must ride a step that started after the prompt was sent
    out, start = [], 0
    for ms, c, decodes, last in reversed(chunks):
        out.append(Step(ms, c, chunk_pairs(start, c), decodes, int(last), label))
        start += c
    return out


async def measure(prefill_url: str, decode_url: str, local_proxy: str, remote_proxy: str, model: str,
                  log=print) -> tuple[list, dict[int, list[float]]]:  # fmt: skip
    """Run the phases (the module docstring) on a started pair; returns the observations and the plain
    decode steps by batch size (for the jitter). ``local_proxy`` prefills short prompts on decode,
    ``remote_proxy`` hands every prompt off."""
    obs: list = []
    plain: dict[int, list[float]] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        drv = Driver(session, model)
        rec = Recorder(drv)

        t0 = time.monotonic()
        log("  warm-up: batches, a chunked and a whole long prompt, local and handed-off requests")
        rec.start(decode_url, 4)
        await rec.settle(2)
        await asyncio.gather(drv.send(decode_url, "warm", LONG, 2), drv.send(prefill_url, "warm", LONG, 2))
        for url in (local_proxy, remote_proxy, local_proxy, remote_proxy):
            await drv.send(url, "warm", SHORT, 2)
        await rec.stop()

        log("  A: plain decode steps, batch " + ", ".join(map(str, BATCHES)))
        for k in BATCHES:
            rec.start(decode_url, k)
            await rec.settle(2)
            await asyncio.sleep(1.0)
            steps = plain_steps(await rec.stop(), batch=k)
            plain[k] = [s.ms for s in steps]
            obs += steps

        log(f"  B: a local and a handed-off {SHORT}-token request joining a batch of {JOIN_BATCH}")
        rec.start(decode_url, JOIN_BATCH)
        await rec.settle(2)
        probes = []
        for _ in range(PROBES):
            probes.append((await drv.send(decode_url, "local", SHORT, 1), SHORT, chunk_pairs(0, SHORT),
                           "local join step"))  # fmt: skip
            await asyncio.sleep(0.1)
            probes.append((await drv.send(remote_proxy, "handed-off", SHORT, 1), 1, chunk_pairs(SHORT - 1, 1),
                           "handed-off join step"))  # fmt: skip
            await asyncio.sleep(0.1)
        bg = await rec.stop()
        for probe, tokens, pairs, label in probes:
            step = join_step(bg, probe, tokens, pairs, label)
            if step is not None:
                obs.append(step)

        log(f"  C: a {LONG}-token prompt chunked by decode's budget of {DECODE_BUDGET}, batch "
            + ", ".join(map(str, CHUNK_BATCHES)))  # fmt: skip
        for k in CHUNK_BATCHES:
            rec.start(decode_url, k)
            await rec.settle(2)
            probe = await drv.send(decode_url, "chunked", LONG, 1)
            obs += chunk_steps(await rec.stop(), probe, DECODE_BUDGET, "chunk step")

        log(
            "  D: whole prompts of "
            + ", ".join(map(str, WHOLE_PROMPTS))
            + " tokens (prefill, one stream beside)"
        )
        rec.start(prefill_url, 1)
        await rec.settle(2)
        probes = []
        for n in WHOLE_PROMPTS:
            probes.append((await drv.send(prefill_url, "whole", n, 1), n))
        bg = await rec.stop()
        for probe, n in probes:
            step = join_step(bg, probe, n, chunk_pairs(0, n), "whole-prompt step")
            if step is not None:
                obs.append(step)

        log("  E: first tokens on the idle pair through the proxy, local and handed off")
        await asyncio.sleep(0.5)
        local = (Step(0, SHORT, chunk_pairs(0, SHORT), 0, 1),)
        handed = (Step(0, SHORT, chunk_pairs(0, SHORT), 0, 0), Step(0, 1, chunk_pairs(SHORT - 1, 1), 0, 1))
        for _ in range(PROBES):
            t = await drv.send(local_proxy, "idle local", SHORT, 1)
            obs.append(FirstToken((t.arrivals[0] - t.sent) * 1e3, local, False, "idle local first token"))
            await asyncio.sleep(0.15)
            t = await drv.send(remote_proxy, "idle handed-off", SHORT, 1)
            obs.append(
                FirstToken((t.arrivals[0] - t.sent) * 1e3, handed, True, "idle handed-off first token")
            )
            await asyncio.sleep(0.15)
        log(f"  measured in {time.monotonic() - t0:.0f} s")
    return obs, plain


if __name__ == "__main__":  # pragma: no cover - run through tools/calibrate_profile.py --live
    sys.exit("run tools/calibrate_profile.py --live")

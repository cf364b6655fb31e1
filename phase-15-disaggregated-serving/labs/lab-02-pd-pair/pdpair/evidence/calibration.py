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
    tokens = sorted((t, n, i) for n, r in enumerate(requests) for i, t in enumerate(r.arrivals))
    out: list[tuple[float, list]] = []
    for t, n, i in tokens:
        r = requests[n]
        if not out or t - out[-1][0] > STEP_CLUSTER_S:
            out.append((t, []))
        out[-1][1].append((r, i))
    return out


def _decodes(toks) -> int:
    return sum(i > 0 for _, i in toks)


def plain_steps(requests: list[Timed], batch: int) -> list[Step]:
    """Steps in which each of the ``batch`` streams decoded one token and nothing else happened, timed
    from a step that was complete too (a step whose tokens the client read more than
    ``STEP_CLUSTER_S`` apart looks like two short ones: both are left out)."""
    steps = clusters(requests)
    out = []
    for (a, prev), (b, toks) in zip(steps, steps[1:], strict=False):
        if len(toks) == _decodes(toks) == batch and _decodes(prev) == batch:
            out.append(Step((b - a) * 1e3, 0, 0, batch, 0, "plain decode step"))
    return out


def join_step(
    requests: list[Timed], probe: Timed, batch: int, tokens: int, pairs: int, label: str
) -> Step | None:
    """The step that streamed ``probe``'s first token beside one token of each of the ``batch``
    background streams (and no other first token), after a complete step: ``tokens`` prompt tokens
    (``pairs`` attention pairs) computed in it, one join. None when the step is not that."""
    steps = clusters([*requests, probe])
    for (a, prev), (b, toks) in zip(steps, steps[1:], strict=False):
        if any(r is probe and i == 0 for r, i in toks):
            if sum(i == 0 for _, i in toks) != 1 or _decodes(toks) != batch or _decodes(prev) < batch:
                return None
            return Step((b - a) * 1e3, tokens, pairs, batch, 1, label)
    return None


def chunk_steps(requests: list[Timed], probe: Timed, batch: int, budget: int, label: str) -> list[Step]:
    """The steps a long ``probe`` prompt was chunked over on an instance with token budget ``budget``
    and ``batch`` background streams: the scheduler gives a waiting prompt what the decodes leave of the
    budget, so its m = ceil(n / (budget - batch)) chunks are full but the last, which streams its first
    token. Walks back m steps from that one. [] when they do not add up (another prompt shared them, a
    step's tokens were read apart, or the first chunk's step started before the prompt was sent)."""
    steps = clusters([*requests, probe])
    ends = [b for b, _ in steps]
    k = next((j for j, (_, toks) in enumerate(steps) if any(r is probe and i == 0 for r, i in toks)), None)
    per = budget - batch
    m = -(-probe.prompt_tokens // per)
    if k is None or k - m < 0:
        return []
    for j in range(k - m, k + 1):  # the step before the first chunk, and every chunk step
        toks = steps[j][1]
        if _decodes(toks) != batch or sum(i == 0 for _, i in toks) != (j == k):
            return []
    if ends[k - m] < probe.sent:
        return []
    out = []
    for c_index, j in enumerate(range(k - m + 1, k + 1)):
        start = c_index * per
        c = min(per, probe.prompt_tokens - start)
        out.append(Step((ends[j] - ends[j - 1]) * 1e3, c, chunk_pairs(start, c), batch, int(j == k), label))
    return out


def _raw(t: Timed) -> dict:
    return {"tag": t.tag, "prompt_tokens": t.prompt_tokens, "sent": round(t.sent, 6),
            "arrivals": [round(x, 6) for x in t.arrivals]}  # fmt: skip


def _timed(d: dict) -> Timed:
    return Timed(d["tag"], d["prompt_tokens"], d["sent"], list(d["arrivals"]), 200)


def derive(raw: list[dict]) -> tuple[list, dict[int, list[float]]]:
    """The observations (``fleetsim.fit``) and the plain steps by batch (for the jitter) from a
    calibration's raw timings (``measure``'s second result; ``calibration/arrivals.json``). Each segment
    is {"phase", "batch", "background": [requests], "probes": [requests]} with monotonic times."""
    obs: list = []
    plain: dict[int, list[float]] = {}
    local = (Step(0, SHORT, chunk_pairs(0, SHORT), 0, 1),)
    handed = (Step(0, SHORT, chunk_pairs(0, SHORT), 0, 0), Step(0, 1, chunk_pairs(SHORT - 1, 1), 0, 1))
    for seg in raw:
        bg = [_timed(d) for d in seg["background"]]
        probes = [_timed(d) for d in seg["probes"]]
        k = seg["batch"]
        if seg["phase"] == "A":
            steps = plain_steps(bg, k)
            plain[k] = [x.ms for x in steps]
            obs += steps
        elif seg["phase"] == "B":
            for p in probes:
                if p.tag == "local":
                    step = join_step(bg, p, k, SHORT, chunk_pairs(0, SHORT), "local join step")
                else:
                    step = join_step(bg, p, k, 1, chunk_pairs(SHORT - 1, 1), "handed-off join step")
                obs += [step] if step else []
        elif seg["phase"] == "C":
            for p in probes:
                obs += chunk_steps(bg, p, k, DECODE_BUDGET, "chunk step")
        elif seg["phase"] == "D":
            for p in probes:
                step = join_step(
                    bg, p, k, p.prompt_tokens, chunk_pairs(0, p.prompt_tokens), "whole-prompt step"
                )
                obs += [step] if step else []
        elif seg["phase"] == "E":
            for p in probes:
                ms = (p.arrivals[0] - p.sent) * 1e3
                if p.tag == "idle local":
                    obs.append(FirstToken(ms, local, False, "idle local first token"))
                else:
                    obs.append(FirstToken(ms, handed, True, "idle handed-off first token"))
    return obs, plain


async def measure(prefill_url: str, decode_url: str, local_proxy: str, remote_proxy: str, model: str,
                  log=print) -> list[dict]:  # fmt: skip
    """Run the phases (the module docstring) on a started pair and return their raw timings (``derive``
    turns them into observations). ``local_proxy`` prefills short prompts on decode, ``remote_proxy``
    hands every prompt off."""
    raw: list[dict] = []

    def keep(phase: str, batch: int, bg: list[Timed], probes: list[Timed]) -> None:
        raw.append({"phase": phase, "batch": batch, "background": [_raw(t) for t in bg],
                    "probes": [_raw(t) for t in probes]})  # fmt: skip

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
            keep("A", k, await rec.stop(), [])

        log(f"  B: a local and a handed-off {SHORT}-token request joining a batch of {JOIN_BATCH}")
        rec.start(decode_url, JOIN_BATCH)
        await rec.settle(2)
        probes = []
        for _ in range(PROBES):
            probes.append(await drv.send(decode_url, "local", SHORT, 1))
            await asyncio.sleep(0.1)
            probes.append(await drv.send(remote_proxy, "handed-off", SHORT, 1))
            await asyncio.sleep(0.1)
        keep("B", JOIN_BATCH, await rec.stop(), probes)

        log(f"  C: a {LONG}-token prompt chunked by decode's budget of {DECODE_BUDGET}, batch "
            + ", ".join(map(str, CHUNK_BATCHES)))  # fmt: skip
        for k in CHUNK_BATCHES:
            rec.start(decode_url, k)
            await rec.settle(2)
            probe = await drv.send(decode_url, "chunked", LONG, 1)
            keep("C", k, await rec.stop(), [probe])

        log(
            "  D: whole prompts of "
            + ", ".join(map(str, WHOLE_PROMPTS))
            + " tokens (prefill, one stream beside)"
        )
        rec.start(prefill_url, 1)
        await rec.settle(2)
        probes = [await drv.send(prefill_url, "whole", n, 1) for n in WHOLE_PROMPTS]
        keep("D", 1, await rec.stop(), probes)

        log("  E: first tokens on the idle pair through the proxy, local and handed off")
        await asyncio.sleep(0.5)
        probes = []
        for _ in range(PROBES):
            probes.append(await drv.send(local_proxy, "idle local", SHORT, 1))
            await asyncio.sleep(0.15)
            probes.append(await drv.send(remote_proxy, "idle handed-off", SHORT, 1))
            await asyncio.sleep(0.15)
        keep("E", 0, [], probes)
        log(f"  measured in {time.monotonic() - t0:.0f} s")
    return raw


if __name__ == "__main__":  # pragma: no cover - run through tools/calibrate_profile.py --live
    sys.exit("run tools/calibrate_profile.py --live")

"""Fleets and the event loop: colocated N, or x prefill + y decode with a conditional threshold.

- ``Fleet(colocated=2)``: two instances that each prefill and decode; requests routed over them.
- ``Fleet(prefill=1, decode=1)``: every prompt prefilled on a prefill instance, its KV sent over the
  decode instance's link (``link.KVLink``), then decoded there (lab-02's ``pd-all``).
- ``Fleet(prefill=1, decode=1, threshold=256)``: prompts of <= 256 tokens are prefilled on a decode
  instance itself, longer ones handed off (lab-02 task 4's ``prefill_remotely``; ``pd-conditional``).
  With ``remote_queue_limit=1`` a short prompt also goes remote while the prefill instance is idle.
- ``Fleet(prefill=1, decode=1, threshold=256, max_prefill_queue=2)``: Dynamo's conditional rule - a
  prompt goes remote only if it is longer than the threshold AND the prefill queue holds fewer than 2
  requests; otherwise decode prefills it (ai-dynamo/dynamo ``examples/llm/components/disagg_router.py``,
  ``PyDisaggregatedRouter.prefill_remote``: prefill length vs ``max_local_prefill_length`` and queue
  size vs ``max_prefill_queue_size``).
- ``decode_budget=24``: the decode instances' own ``max_num_batched_tokens`` (a local prefill is then
  chunked over decode steps), while the prefill instances keep ``budget``.
Routing (``round-robin`` or ``least-loaded``: fewest waiting + running requests, lowest index on a tie)
picks a colocated or prefill instance when a request arrives and a decode instance when it needs one
(arrival for local prefills, KV handoff for remote ones).

Times follow lab-02's proxy: a request reaches its engine ``request_overhead_ms`` after it is sent
(the profile's client + proxy cost) and each token reaches the client when its step ends. A handed-off
request's prefill hop ends with its prefill; the decode instance then computes the prompt's last
token itself (as vLLM's NIXL consumer does) and streams the answer, first token included.
``simulate`` returns each request in the capture record format lab-02 records in (``labkit.capture.RequestRecord``),
so lab-02's metric code reads simulated and measured runs alike.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass

from fleetsim.engine import Instance, SimRequest
from fleetsim.link import KVLink
from fleetsim.workload import Arrival, Streams
from labkit.capture import RequestRecord  # the capture format lab-02 records a real pair in

ROUTINGS = ("round-robin", "least-loaded")


@dataclass(frozen=True)
class Fleet:
    colocated: int = 0
    prefill: int = 0
    decode: int = 0
    threshold: int | None = None  # P/D only: prompts <= threshold are prefilled on decode
    # P/D with a threshold: a prompt <= threshold still goes remote while the least-loaded prefill
    # instance holds fewer than this many requests (a queue-aware rule, as Dynamo's router weighs it)
    remote_queue_limit: int | None = None
    # Dynamo's rule: a prompt goes remote only while the least-loaded prefill instance holds fewer than
    # this many requests; otherwise it is prefilled on decode, however long
    max_prefill_queue: int | None = None
    budget: int | None = None  # max_num_batched_tokens of every instance; None: the profile's default
    decode_budget: int | None = None  # P/D only: the decode instances' own budget (None: ``budget``)
    routing: str = "round-robin"
    link_gbps: float | None = -1.0  # -1: the profile's link
    link_latency_ms: float | None = None  # None: the profile's

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing: {self.routing!r} is not one of {', '.join(ROUTINGS)}")
        if self.colocated < 0 or self.prefill < 0 or self.decode < 0:
            raise ValueError("instances: counts must be >= 0")
        if self.colocated and (self.prefill or self.decode):
            raise ValueError("instances: a fleet is colocated N or prefill x + decode y, not both")
        if not self.colocated and (self.decode < 1 or (self.prefill < 1 and self.threshold is None)):
            raise ValueError("instances: need colocated >= 1, or decode >= 1 with prefill >= 1")
        if self.colocated and self.threshold is not None:
            raise ValueError("threshold: only a P/D fleet has a conditional threshold")
        if self.decode_budget is not None and (self.colocated or self.decode_budget < 1):
            raise ValueError(
                "decode_budget: only a P/D fleet's decode instances have one, and it must be >= 1"
            )
        if self.max_prefill_queue is not None and (self.colocated or self.max_prefill_queue < 1):
            raise ValueError("max_prefill_queue: only a P/D fleet has a prefill queue, and it must be >= 1")
        if self.remote_queue_limit is not None and (self.threshold is None or self.remote_queue_limit < 1):
            raise ValueError("remote_queue_limit: needs a threshold and must be >= 1")

    @property
    def name(self) -> str:
        if self.colocated:
            return f"colocated x{self.colocated}" + (
                f" chunk{self.budget}" if self.budget is not None else ""
            )
        rule = "all remote" if self.threshold is None else f"local <= {self.threshold}"
        if self.remote_queue_limit is not None:
            rule += f" unless prefill queue < {self.remote_queue_limit}"
        if self.max_prefill_queue is not None:
            rule += f", local while prefill queue >= {self.max_prefill_queue}"
        if self.decode_budget is not None:
            rule += f", decode chunk{self.decode_budget}"
        return f"P/D {self.prefill}:{self.decode} {rule}"


@dataclass
class SimResult:
    fleet: Fleet
    requests: list[SimRequest]
    instances: list[Instance]
    steps: int
    end_ms: float

    def records(self) -> list[RequestRecord]:
        """Every request as lab-02's capture records it (seconds; status 0 if it never finished)."""
        out = []
        for r in self.requests:
            done = r.finished and r.first_step >= 0
            arrivals = [t / 1e3 for t in r.instance.token_times_ms(r)] if done else []
            out.append(RequestRecord(r.kind, r.instance.name if r.instance else "", r.mode, 200 if done else 0,
                                     r.sent_ms / 1e3, arrivals, r.prefill_ms,
                                     None if done else "unfinished when the simulation stopped"))  # fmt: skip
        return out


def prefill_locally(fleet: Fleet, prompt_tokens: int, front: list[Instance]) -> bool:
    """A P/D fleet's routing rule for one arriving prompt: True = a decode instance prefills it itself.
    ``front`` are the prefill instances; their queue is the least-loaded one's requests (waiting + running).
    Example: threshold 256, max_prefill_queue 2, a 1500-token prompt while prefill holds 2 -> True."""
    if not front:
        return True
    queue = min(p.load() for p in front)
    if fleet.max_prefill_queue is not None and queue >= fleet.max_prefill_queue:
        return True
    if fleet.threshold is None or prompt_tokens > fleet.threshold:
        return False
    return not (fleet.remote_queue_limit is not None and queue < fleet.remote_queue_limit)


class _Router:
    def __init__(self, instances: list[Instance], policy: str) -> None:
        self.instances, self.policy, self.rr = instances, policy, itertools.cycle(instances)

    def pick(self) -> Instance:
        if self.policy == "round-robin":
            return next(self.rr)
        return min(self.instances, key=Instance.load)


def simulate(fleet: Fleet, profile, arrivals: list[Arrival] | None = None, streams: Streams | None = None,
             max_time_s: float = float("inf"), seed: int = 0, decode_profile=None) -> SimResult:  # fmt: skip
    """Run ``arrivals`` (open loop) and/or ``streams`` (closed loop) through ``fleet`` until every
    request has finished or ``max_time_s`` of simulated time has passed; ``seed`` seeds the step-time
    jitter (the same seed, fleet and workload give the same result). ``decode_profile``: a P/D fleet's
    decode instances run on it (other hardware than the prefill instances, Splitwise-style); None: on
    ``profile`` like every other instance."""
    if arrivals is None and streams is None:
        raise ValueError("workload: give arrivals, streams, or both")

    def mk(name: str, role: str) -> Instance:
        budget = fleet.decode_budget if role == "decode" and fleet.decode_budget is not None else fleet.budget
        prof = decode_profile if role == "decode" and decode_profile is not None else profile
        return Instance(name, prof, role, budget, seed=seed)

    if fleet.colocated:
        front = [mk(f"instance-{i}", "both") for i in range(fleet.colocated)]
        decoders: list[Instance] = []
    else:
        one_p, one_d = fleet.prefill == 1, fleet.decode == 1
        front = [mk("prefill" if one_p else f"prefill-{i}", "prefill") for i in range(fleet.prefill)]
        decoders = [mk("decode" if one_d else f"decode-{i}", "decode") for i in range(fleet.decode)]
    gbps = profile.link_gbps if fleet.link_gbps == -1.0 else fleet.link_gbps
    latency = profile.link_latency_ms if fleet.link_latency_ms is None else fleet.link_latency_ms
    links = {d: KVLink(gbps, latency) for d in decoders}
    kv_bytes = profile.kv_bytes_per_token
    front_router = _Router(front, fleet.routing) if front else None
    decode_router = _Router(decoders, fleet.routing) if decoders else None
    overhead = profile.request_overhead_ms
    horizon_ms = max_time_s * 1e3

    events: list = []
    seq = itertools.count()
    requests: list[SimRequest] = []
    ARRIVE, STEP, LANDED = 0, 1, 2

    def new_request(kind: str, prompt: int, out: int, sent_ms: float, stream: int = -1) -> None:
        req = SimRequest(len(requests), kind, prompt, out, sent_ms, stream)
        requests.append(req)
        heapq.heappush(events, (sent_ms + overhead, next(seq), ARRIVE, req))

    def kick(inst: Instance, now: float) -> None:
        if not inst.busy:
            d = inst.start_step()
            if d is not None:
                heapq.heappush(events, (now + d, next(seq), STEP, inst))

    for a in arrivals or []:
        new_request(a.kind, a.prompt_tokens, a.output_tokens, a.arrival_s * 1e3)
    rng = random.Random(streams.seed) if streams else None
    if streams:
        for a in streams.longs():
            new_request("long", a.prompt_tokens, a.output_tokens, a.arrival_s * 1e3)

        def next_short(i: int, now: float) -> None:
            if now < streams.duration_s * 1e3:
                out = streams.output_tokens + rng.randint(-streams.output_jitter, streams.output_jitter)
                new_request("short", streams.short_prompt_tokens, max(out, 1), now, i)

        for i in range(streams.streams):
            next_short(i, i * streams.stagger_s * 1e3)

    steps = 0
    now = 0.0
    while events:
        now, _, kind, obj = heapq.heappop(events)
        if now > horizon_ms:
            break
        if kind == ARRIVE:
            req = obj
            if fleet.colocated:
                req.mode, inst = "colocated", front_router.pick()
            elif prefill_locally(fleet, req.prompt_tokens, front):
                req.mode, inst = "local", decode_router.pick()
            else:
                req.mode, inst = "disaggregated", front_router.pick()
            inst.add(req)
            kick(inst, now)
        elif kind == STEP:
            inst = obj
            steps += 1
            finished, handoff = inst.end_step(now)
            for req in handoff:
                req.prefill_ms = now - req.sent_ms
                dec = decode_router.pick()
                landed = links[dec].send(now, req.prompt_tokens * kv_bytes)
                heapq.heappush(events, (landed, next(seq), LANDED, (req, inst, dec)))
            for req in finished:
                if req.stream >= 0:
                    next_short(req.stream, now)
            kick(inst, now)
        else:
            req, src, dec = obj
            src.release_prefill(req)
            req.admitted, req.done_tokens = False, req.prompt_tokens - 1
            dec.add(req)
            kick(src, now)
            kick(dec, now)
    return SimResult(fleet, requests, front + decoders, steps, now)

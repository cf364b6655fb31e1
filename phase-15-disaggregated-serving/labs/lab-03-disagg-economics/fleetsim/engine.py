"""One serving instance, step by step: a scheduler with a token budget, a running batch, KV blocks.

The scheduler follows vLLM V1's order (vllm/v1/core/sched/scheduler.py at 0.32.0: running requests
first, then waiting ones, all under one ``max_num_batched_tokens`` budget): every running request
decodes one token, and whatever budget is left goes to prompt tokens of waiting requests in arrival
order - a prompt longer than what is left is cut into chunks over several steps (chunked prefill).

Simplifications, stated: a request is admitted (its first chunk scheduled) only when ``max_num_seqs``
has a seat and the instance has free KV blocks for its whole prompt and answer, reserved up front, so
nothing is ever preempted (vLLM allocates as it goes and preempts under pressure); a request whose
prefill ends in a step gets its first token at that step's end, then one token per step. Because a
running request decodes in every step until it finishes, its token times are a contiguous run of this
instance's step-end times: the engine stores the run (first step, count), not every token, which is
what makes 100k requests cheap. Time is in milliseconds.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from fleetsim.profile import chunk_pairs


@dataclass(eq=False)
class SimRequest:
    """One request's life in the simulator (times in ms from the start)."""

    rid: int
    kind: str
    prompt_tokens: int
    output_tokens: int
    sent_ms: float
    stream: int = -1  # closed-loop stream it belongs to, -1 for open-loop arrivals
    mode: str = "colocated"  # "colocated" | "local" (prefilled on decode) | "disaggregated"
    done_tokens: int = 0  # prompt tokens whose KV exists on the instance that holds it
    first_step: int = -1  # index in ``instance.step_end_ms`` of its first streamed token
    instance: object = None  # the Instance that streams its answer
    prefill_ms: float | None = None  # prefill hop (sent -> KV handed off), disaggregated only
    blocks: int = 0
    admitted: bool = False
    finished: bool = False


class Instance:
    """An engine; ``role`` is "both" (prefill and decode), "prefill" (hands KV off) or "decode"."""

    def __init__(self, name: str, profile, role: str = "both", budget: int | None = None, max_num_seqs: int | None = None,
                 kv_blocks: int | None = None, seed: int = 0) -> None:  # fmt: skip
        budget = profile.max_num_batched_tokens if budget is None else budget
        if budget < 1:
            raise ValueError(f"budget: max_num_batched_tokens must be >= 1, got {budget}")
        self.name, self.profile, self.role, self.budget = name, profile, role, budget
        self.max_num_seqs = min(max_num_seqs or profile.max_num_seqs, budget)
        self.free_blocks = kv_blocks if kv_blocks is not None else profile.kv_blocks
        self.block_size = profile.block_size
        self.waiting: deque[SimRequest] = deque()  # arrived, prefill not finished (admitted ones first)
        self.seats = 0  # admitted and not finished
        self.decoding = 0
        self.decode_context = 0
        self.finish_at: dict[int, list[SimRequest]] = {}  # step index -> requests whose last token it is
        self.step_end_ms: list[float] = []
        self.busy = False
        self._chunks: list[tuple[SimRequest, int]] = []
        self._jitter = profile.step_jitter_sigma
        self._rng = random.Random(f"{seed}:{name}")

    def load(self) -> int:
        """Requests this instance holds (waiting + running): what least-loaded routing compares."""
        return len(self.waiting) + self.decoding

    def add(self, req: SimRequest) -> None:
        self.waiting.append(req)

    def start_step(self) -> float | None:
        """Compose the next step; its duration in ms, or None when there is nothing to run."""
        budget = self.budget - self.decoding
        tokens = pairs = joins = 0
        chunks = self._chunks = []
        for req in self.waiting:
            if budget <= 0:
                break
            if not req.admitted:
                need = -(
                    -(req.prompt_tokens + (req.output_tokens if self.role != "prefill" else 1))
                    // self.block_size
                )
                if self.seats >= self.max_num_seqs or need > self.free_blocks:
                    break  # first come, first served: nobody overtakes a request that does not fit
                req.admitted, req.blocks = True, need
                self.free_blocks -= need
                self.seats += 1
            c = min(req.prompt_tokens - req.done_tokens, budget)
            chunks.append((req, c))
            joins += req.done_tokens + c == req.prompt_tokens and self.role != "prefill"
            tokens += c
            pairs += chunk_pairs(req.done_tokens, c)
            budget -= c
        if not chunks and not self.decoding:
            return None
        self.busy = True
        ms = self.profile.step_ms(tokens, pairs, self.decoding, self.decode_context, joins)
        return ms * self._rng.lognormvariate(0.0, self._jitter) if self._jitter else ms

    def end_step(self, now_ms: float) -> tuple[list[SimRequest], list[SimRequest]]:
        """Finish the step at ``now_ms``: returns (requests whose answer just ended, prefills to hand off)."""
        self.busy = False
        k = len(self.step_end_ms)
        self.step_end_ms.append(now_ms)
        self.decode_context += self.decoding
        finished = self.finish_at.pop(k, [])
        for req in finished:
            self._release(req, decoding=True)
        handoff = []
        for req, c in self._chunks:
            req.done_tokens += c
            if req.done_tokens < req.prompt_tokens:
                continue
            if self.waiting[0] is req:
                self.waiting.popleft()
            else:
                self.waiting.remove(req)
            if self.role == "prefill":
                handoff.append(req)
                continue
            req.first_step, req.instance = k, self
            if req.output_tokens <= 1:
                self._release(req, decoding=False)
                finished.append(req)
            else:
                self.finish_at.setdefault(k + req.output_tokens - 1, []).append(req)
                self.decoding += 1
                self.decode_context += req.prompt_tokens + 1
        self._chunks = []
        return finished, handoff

    def release_prefill(self, req: SimRequest) -> None:
        """A prefill instance frees a handed-off request's blocks once its KV has left."""
        self.free_blocks += req.blocks
        self.seats -= 1

    def _release(self, req: SimRequest, decoding: bool) -> None:
        req.finished = True
        self.free_blocks += req.blocks
        self.seats -= 1
        if decoding:
            self.decoding -= 1
            self.decode_context -= req.prompt_tokens + req.output_tokens

    def token_times_ms(self, req: SimRequest) -> list[float]:
        return self.step_end_ms[req.first_step : req.first_step + req.output_tokens]

"""Engine: continuous batching over a paged KV cache, with preemption by recompute.

Scheduler side: ``waiting``/``running`` queues, block tables, the BlockPool. Worker side: the KVCache
tensor and the model. Each ``step()`` (as in vLLM v1, there is no separate prefill mode: a request
simply computes every token it has not computed yet):

1. every running request gets room for the token it decodes next; when the pool is empty the
   most recently admitted running request is preempted: its blocks are freed, its KV discarded, and
   it goes back to the front of ``waiting`` to be recomputed later (vLLM's preemption by recompute);
2. waiting requests are admitted, oldest first, while the pool has blocks for all their tokens;
3. every scheduled request runs its uncomputed tokens through the model and samples one token.

A KV handoff needs four more doors, given here so the lab can be about the handoff itself:
``detach_request`` (take a live request out, its blocks stay allocated to the caller),
``admit_running`` (take in a request whose K/V the caller already wrote), ``enqueue_waiting``
(take in a request that must be recomputed) and ``await_remote_kv`` (take in a request whose blocks a
remote read is filling: live, holding its blocks, not scheduled; vLLM's WAITING_FOR_REMOTE_KVS).
Each engine keeps time by its own ``clock`` (minivllm/clock.py), has a KV ``layout``
(minivllm/kv_cache.py), and records the requests it gave up on with an error in ``failed``.

``Engine(..., enable_prefix_caching=True)`` (off by default) adds automatic prefix caching, as vLLM
v1 does: after each step the request's full computed blocks get their chained hash
(``minivllm/prefix_cache.py``), and admitting a waiting request (new, or preempted: preemption frees
the blocks but they keep their hashes) first looks its tokens up and shares the cached prefix
(reference count +1) instead of computing it again. At most ``num_tokens - 1`` tokens can hit: the
last one is always computed, for its logits (vLLM 0.32.0 ``v1/core/kv_cache_manager.py:
KVCacheManager.get_computed_blocks``). A hit's free-but-cached blocks count against the free ones
(``v1/core/single_type_kv_cache_manager.py: get_num_blocks_to_allocate``).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable

import torch

from minivllm.block_pool import BlockPool
from minivllm.kv_cache import KVCache
from minivllm.lease import LeaseTable
from minivllm.model import TinyDecoder
from minivllm.prefix_cache import full_block_hashes
from minivllm.sampler import sample
from minivllm.sequence import Request, RequestStatus, SamplingParams

_request_ids = itertools.count()  # process-wide, so requests of two engines never share an id


@contextlib.contextmanager
def _one_thread():
    """Tiny tensors: waking a second thread costs more than the op (and the lab machine has 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class Engine:
    def __init__(
        self,
        model: TinyDecoder,
        num_blocks: int,
        block_size: int,
        clock: Callable[[], float] = time.monotonic,
        enable_prefix_caching: bool = False,
        counter_sampler: Callable[[torch.Tensor, Request], int] | None = None,
        kv_layout: str = "NHD",
    ):
        self.model = model
        self.config = model.config
        self.block_size = block_size
        self.block_pool = BlockPool(num_blocks, enable_caching=enable_prefix_caching)
        self.kv_cache = KVCache(model.config, num_blocks, block_size, layout=kv_layout)
        self.requests: dict[str, Request] = {}  # every live request: waiting or running
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # admission order; the last one is preempted first
        self.finished: dict[str, list[int]] = {}  # request id -> output tokens, kept for inspection
        self.failed: dict[
            str, str
        ] = {}  # request id -> why it ended with an error here (vLLM: FINISHED_ERROR)
        self.num_forward_tokens = 0  # tokens pushed through the model: prefill work shows up here
        self.num_preemptions = 0
        self.num_prefix_hit_tokens = 0  # tokens admission found in the prefix cache (not computed)
        self.clock = clock  # seconds; this engine's own (tests pass a ManualClock or SkewedClock)
        self.counter_sampler = counter_sampler  # draws for rng='counter' requests (lab task 8; sampler.py)
        self.leases = LeaseTable()  # blocks held for remote readers (pull-mode handoffs, task 5)
        self.epochs: dict[str, int] = {}  # request id -> the latest epoch it has been live at here

    # ------------------------------------------------------------------ inspection
    @property
    def num_blocks(self) -> int:
        return self.block_pool.num_blocks

    @property
    def kv_layout(self) -> str:
        return self.kv_cache.layout

    @property
    def usage(self) -> float:
        return self.block_pool.usage

    @property
    def prefix_cache(self):
        """The engine's PrefixCache, or None when prefix caching is off."""
        return self.block_pool.prefix_cache

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    # ------------------------------------------------------------------ admission
    def add_request(
        self,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams | None = None,
        request_id: str | None = None,
    ) -> str:
        """Queue a new request; return its id (unique in this process unless you pass one)."""
        request_id = f"req-{next(_request_ids)}" if request_id is None else request_id
        self.enqueue_waiting(Request(request_id, prompt_token_ids, sampling_params or SamplingParams()))
        return request_id

    def enqueue_waiting(self, request: Request) -> None:
        """Queue a request that holds no KV here (new, or to be recomputed from its tokens). It may
        already carry output tokens and an advanced generator; its next step computes them all."""
        self._check_admissible(request)
        if request.block_table or request.num_computed_tokens:
            raise ValueError(
                f"{request.request_id}: a waiting request holds no blocks and no computed tokens"
            )
        request.status = RequestStatus.WAITING
        self.requests[request.request_id] = request
        self._record_epoch(request)
        self.waiting.append(request)

    def admit_running(self, request: Request) -> None:
        """Take in a request whose K/V for positions 0..num_computed_tokens-1 the caller has already
        written into ``request.block_table`` (blocks allocated from this engine's pool). Its next step
        is a decode of its last token: no prefill is redone. The block table holds the K/V's blocks,
        and may hold one more when the K/V fills its last block exactly (room for the next token).
        A request may also come in with fewer tokens computed (a partial import whose tail must be
        recomputed): its block table then covers at most all its tokens, and its next step computes
        every uncomputed token, then samples."""
        self._check_admissible(request)
        n = request.num_computed_tokens
        if not 1 <= n < request.num_tokens:
            raise ValueError(
                f"{request.request_id}: a running request has 1 <= computed ({n}) < tokens ({request.num_tokens})"
            )
        most = max(cdiv(n + 1, self.block_size), cdiv(request.num_tokens, self.block_size))
        if not cdiv(n, self.block_size) <= len(request.block_table) <= most:
            raise ValueError(
                f"{request.request_id}: {n} computed tokens need {cdiv(n, self.block_size)} blocks of "
                f"{self.block_size} (room for its next step at most: {most}), block table has "
                f"{len(request.block_table)}"
            )
        if not all(self.block_pool.is_used(b) for b in request.block_table):
            raise ValueError(
                f"{request.request_id}: block table {request.block_table} holds blocks not allocated here"
            )
        request.status = RequestStatus.RUNNING
        self.requests[request.request_id] = request
        self._record_epoch(request)
        self.running.append(request)

    def await_remote_kv(self, request: Request) -> None:
        """Take in a request whose blocks (``request.block_table``, allocated from this engine's pool)
        a remote read is about to fill: it is live here (in ``requests``, its epoch recorded, its blocks
        its own) with status WAITING_FOR_REMOTE_KVS, and no step schedules it. When the read is over,
        ``detach_request`` it and either ``admit_running`` it (its K/V arrived) or free its blocks and
        ``enqueue_waiting`` it (recompute) or drop it."""
        self._check_admissible(request)
        if not request.block_table or not all(self.block_pool.is_used(b) for b in request.block_table):
            raise ValueError(
                f"{request.request_id}: a request waiting for remote K/V holds blocks allocated here, "
                f"got {request.block_table}"
            )
        request.status = RequestStatus.WAITING_FOR_REMOTE_KVS
        self.requests[request.request_id] = request
        self._record_epoch(request)

    def _record_epoch(self, request: Request) -> None:
        self.epochs[request.request_id] = max(self.epochs.get(request.request_id, 0), request.epoch)

    def detach_request(self, request_id: str) -> Request:
        """Take a live request out of this engine and return it. Its blocks stay allocated, now owned
        by the caller (like vLLM's connector holding blocks for a remote reader): read them, then free
        them with ``block_pool.free``."""
        if request_id not in self.requests:
            raise KeyError(f"no live request {request_id!r} in this engine (live: {sorted(self.requests)})")
        request = self.requests.pop(request_id)
        if request.status == RequestStatus.RUNNING:
            self.running.remove(request)
        elif request.status == RequestStatus.WAITING:
            self.waiting.remove(request)
        return request

    def _check_admissible(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already live in this engine")
        if not request.prompt_token_ids:
            raise ValueError("a request needs at least one prompt token")
        bad = [t for t in request.all_token_ids if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} outside the vocabulary [0, {self.config.vocab_size})")
        if request.is_finished:
            raise ValueError(f"{request.request_id} has already produced max_tokens tokens")
        # The cache never holds the last sampled token, so a request peaks at prompt + max_tokens - 1.
        peak = cdiv(len(request.prompt_token_ids) + request.sampling_params.max_tokens - 1, self.block_size)
        if peak > self.num_blocks:
            raise ValueError(
                f"{request.request_id} needs {peak} blocks at its longest; this engine has {self.num_blocks}"
            )

    # ------------------------------------------------------------------ the loop
    def step(self) -> dict[str, int]:
        """One engine step; returns {request_id: token} for every token produced in it."""
        produced = {}
        for request in self._schedule():
            with torch.inference_mode(), _one_thread():
                for position in range(request.num_computed_tokens, request.num_tokens):
                    token = request.all_token_ids[position]
                    logits = self.model.forward_token(token, position, self.kv_cache.kv, request.block_table)
            self.num_forward_tokens += request.num_tokens - request.num_computed_tokens
            request.num_computed_tokens = request.num_tokens
            self.cache_full_blocks(request)
            token = sample(logits, request, self.counter_sampler)
            request.output_token_ids.append(token)
            produced[request.request_id] = token
            if request.is_finished:
                self._finish(request)
        return produced

    def run_until_done(self, max_steps: int = 10_000) -> dict[str, list[int]]:
        """Step until no request is live; return ``finished``."""
        for _ in range(max_steps):
            if not self.has_unfinished_requests():
                return self.finished
            self.step()
        raise RuntimeError(f"requests still live after {max_steps} steps: {list(self.requests.values())}")

    def _schedule(self) -> list[Request]:
        preempted = False
        for request in list(self.running):
            if request.status != RequestStatus.RUNNING:
                continue  # preempted earlier in this loop
            need = cdiv(request.num_tokens, self.block_size) - len(request.block_table)
            while need > self.block_pool.num_free:
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is request:
                    break
            else:
                request.block_table += self.block_pool.allocate(need)
        # Admit only when nobody was just preempted: otherwise the victim would bounce straight back.
        while not preempted and self.waiting:
            request = self.waiting[0]
            hit = self.prefix_hit(request.all_token_ids[: request.num_tokens - 1])
            need = cdiv(request.num_tokens, self.block_size) - len(hit)
            if need + self.block_pool.num_evictable(hit) > self.block_pool.num_free:
                break
            self.waiting.popleft()
            self.block_pool.touch(hit)  # before allocating: a free-but-cached hit must not be handed out
            request.block_table = hit + self.block_pool.allocate(need)
            request.num_computed_tokens = len(hit) * self.block_size
            self.num_prefix_hit_tokens += request.num_computed_tokens
            request.status = RequestStatus.RUNNING
            self.running.append(request)
        return list(self.running)

    # ------------------------------------------------------------------ prefix caching
    def prefix_hit(self, token_ids: list[int]) -> list[int]:
        """The cached blocks holding the longest prefix of ``token_ids`` in whole blocks ([] when
        prefix caching is off). Looks only; takes no reference."""
        if self.prefix_cache is None:
            return []
        return self.prefix_cache.lookup(full_block_hashes(token_ids, self.block_size))

    def cache_full_blocks(self, request: Request) -> None:
        """Name every full, computed block of ``request`` by its chained hash, so later requests with
        the same prefix can share it (vLLM 0.32.0 ``v1/core/block_pool.py: BlockPool.cache_full_blocks``).
        A no-op when prefix caching is off."""
        if self.prefix_cache is None:
            return
        computed = request.all_token_ids[: request.num_computed_tokens]
        for i, block_hash in enumerate(full_block_hashes(computed, self.block_size)):
            if self.prefix_cache.hash_of(request.block_table[i]) != block_hash:
                self.prefix_cache.insert(block_hash, request.block_table[i])

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self.block_pool.free(request.block_table)
        request.block_table = []
        request.num_computed_tokens = 0  # recomputed from its tokens when readmitted (less any prefix hit)
        request.status = RequestStatus.WAITING
        self.waiting.appendleft(request)
        self.num_preemptions += 1

    def _finish(self, request: Request) -> None:
        self.running.remove(request)
        del self.requests[request.request_id]
        self.block_pool.free(request.block_table)
        request.block_table = []
        request.status = RequestStatus.FINISHED
        self.finished[request.request_id] = list(request.output_token_ids)

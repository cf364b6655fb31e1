"""SamplingParams and Request: a request's tokens, progress, blocks and its own random stream."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """``temperature == 0`` is greedy; otherwise sample from the ``top_k`` best logits (0 = all), with
    randomness keyed by ``seed``. The request finishes after ``max_tokens`` output tokens.

    ``rng`` says where that randomness lives (minivllm/sampler.py): ``"stateful"`` (the default), a
    per-request torch.Generator seeded by ``seed`` whose state advances with every draw (vLLM's V1
    model runner); ``"counter"``, no generator at all: each draw's noise is a pure function of
    (``seed``, position, token id) (vLLM's V2 model runner). Anything else raises ValueError.
    """

    temperature: float = 0.0
    top_k: int = 0
    max_tokens: int = 8
    seed: int = 0
    rng: str = "stateful"

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or self.max_tokens < 1:
            raise ValueError(f"invalid sampling params {self}")
        if self.rng not in ("stateful", "counter"):
            raise ValueError(f"rng must be 'stateful' or 'counter', got {self.rng!r}")


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # has no KV in this engine; its next step prefills every uncomputed token
    RUNNING = "running"  # holds blocks with K/V for num_computed_tokens positions
    # Holds blocks a remote read is filling; not scheduled until the reader is done with it (vLLM's
    # RequestStatus.WAITING_FOR_REMOTE_KVS, v1/request.py).
    WAITING_FOR_REMOTE_KVS = "waiting_for_remote_kvs"
    FINISHED = "finished"


class Request:
    """One request. Invariant while running: K/V for positions ``0..num_computed_tokens-1`` sit in the
    blocks of ``block_table`` (logical order); the last token (the one just sampled) is not computed yet."""

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        output_token_ids: list[int] | None = None,
    ):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids = list(output_token_ids or [])
        self.sampling_params = sampling_params
        # The random stream's state: a generator for rng="stateful", None for rng="counter" (none exists).
        self.generator: torch.Generator | None = (
            torch.Generator().manual_seed(sampling_params.seed) if sampling_params.rng == "stateful" else None
        )
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.status = RequestStatus.WAITING
        self.epoch = 0  # how many times this request has moved between engines (see RequestSnapshot.epoch)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return len(self.output_token_ids) >= self.sampling_params.max_tokens

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, {self.status.value}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, blocks={self.block_table})"
        )

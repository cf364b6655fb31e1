"""Pick the next token from one request's logits, with per-request randomness of two kinds.

``SamplingParams.rng`` chooses where a seeded request's randomness lives:

- ``"stateful"``: a per-request ``torch.Generator`` seeded once; every draw advances it. The stream's
  progress exists only inside that generator, so a request moved mid-stream must carry its state.
  This is vLLM 0.32's V1 model runner (``v1/worker/gpu_model_runner.py``: ``_update_states`` seeds a
  ``torch.Generator`` per seeded request; ``v1/sample/ops/topk_topp_sampler.py``: ``random_sample``
  draws its exponential noise from it).
- ``"counter"``: no generator at all. The noise of a draw is a pure function of (seed, position,
  token id), so the seed and the position reproduce it on any engine, after any move or recompute.
  This is the idea of vLLM 0.32's V2 model runner (``v1/worker/gpu/sample/gumbel.py``:
  ``gumbel_noised_argmax`` adds Gumbel noise keyed on ``murmur3_hash32(seed, pos, token id)`` and
  takes the argmax).

The counter-based draw itself is lab-01 task 8: the engine calls the function passed as
``Engine(..., counter_sampler=...)``. Given here: the noise (``counter_uniform``, ``gumbel_noise``).
The KEY is vLLM's (the same murmur3 hash of the same seed, position and token id), the DRAWS are not:
the lab turns the 32-bit hash into ``u = (h + 0.5) / 2**32`` in float64 and takes ``-log(-log(u))``;
vLLM's default fp32 path takes ``-log(-log1p(-u))`` of an fp32 ``u`` (``murmur3_uniform32``,
``_log1p_neg_stable``), and its fp64 path builds ``u`` from 53 bits of two hashes
(``murmur3_uniform64``) before ``-log(-log(u))``. Same distribution, other tokens for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from minivllm.sequence import Request

_MASK32 = 0xFFFFFFFF


def _mul32(a, b: int):
    """(a * b) mod 2**32 for a uint32 (int or int64 tensor) and a uint32 constant, without overflow:
    b is split into 16-bit halves so no partial product exceeds 48 bits."""
    lo = a * (b & 0xFFFF)
    hi = ((a * (b >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _rotl32(x, r: int):
    return ((x << r) & _MASK32) | (x >> (32 - r))


def _mix(h, key):
    """One murmur3_32 block: vLLM's ``_murmur3_mix`` (v1/worker/gpu/sample/gumbel.py)."""
    key = _mul32(_rotl32(_mul32(key, 0xCC9E2D51), 15), 0x1B873593)
    h = _rotl32(h ^ key, 13)
    return (_mul32(h, 5) + 0xE6546B64) & _MASK32


def _fmix32(h):
    """murmur3's finaliser: vLLM's ``_murmur3_fmix32``."""
    h = _mul32(h ^ (h >> 16), 0x85EBCA6B)
    h = _mul32(h ^ (h >> 13), 0xC2B2AE35)
    return h ^ (h >> 16)


def counter_uniform(seed: int, position: int, vocab_size: int) -> torch.Tensor:
    """Uniform noise in the open interval (0, 1), one float64 value per token id, shape [vocab_size].

    ``u[t]`` depends on ``(seed, position, t)`` and nothing else: no state, no engine, no request id,
    no call order. The hash is vLLM 0.32's ``murmur3_hash32(seed, pos, offset)`` with the token id as
    the offset (v1/worker/gpu/sample/gumbel.py); ``seed`` is taken as 64 bits (two 32-bit words, as
    vLLM does), ``position`` as 32 bits (a non-negative int below 2**32). The step from the hash to
    ``u`` is the lab's own (vLLM's fp32 and fp64 paths each build ``u`` their own way: module docstring).
    Example: ``counter_uniform(7, 12, 97)[5]`` is the same number on every engine, every time.
    """
    if not 0 <= position <= _MASK32:
        raise ValueError(f"position must be in [0, 2**32), got {position}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    h = 0
    for word in (seed & _MASK32, (seed >> 32) & _MASK32, position):  # the request-wide prefix: scalars
        h = _mix(h, word)
    token_ids = torch.arange(vocab_size, dtype=torch.int64)
    hashed = _fmix32(_mix(torch.full_like(token_ids, h), token_ids) ^ 16)
    return (hashed.double() + 0.5) / 2.0**32  # the midpoint of each of 2**32 bins: never 0, never 1


def gumbel_noise(seed: int, position: int, vocab_size: int) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` from ``counter_uniform(seed, position, vocab_size)``.

    The Gumbel-max trick: ``argmax(logits / temperature + gumbel_noise(...))`` is a draw from
    ``softmax(logits / temperature)``; with this noise the draw is a pure function of its key.
    """
    return -torch.log(-torch.log(counter_uniform(seed, position, vocab_size)))


def apply_temperature_top_k(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """``logits / temperature`` in float64, with every logit below the ``top_k``-th best set to -inf
    (``top_k == 0`` or ``>= vocab``: keep all; ties with the ``top_k``-th best are kept). Both samplers
    shape their distribution with this, so they sample from the same one."""
    logits = logits.double() / temperature
    if 0 < top_k < logits.numel():
        kth_best = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    return logits


def sample(
    logits: torch.Tensor,
    request: Request,
    counter_sampler: Callable[[torch.Tensor, Request], int] | None = None,
) -> int:
    """The token ``request`` samples from ``logits`` (the next-token logits of its last token).

    Greedy when ``temperature == 0`` whatever ``rng`` says (argmax; ties go to the lowest id).
    Otherwise ``rng == "stateful"``: one draw from ``request.generator`` (advancing it);
    ``rng == "counter"``: ``counter_sampler(logits, request)``, the engine's counter-based draw
    (ValueError when the engine has none).
    """
    params = request.sampling_params
    if params.temperature == 0:
        return int(torch.argmax(logits))
    if params.rng == "counter":
        if counter_sampler is None:
            raise ValueError(
                f"{request.request_id} samples with rng='counter', but this engine has no counter_sampler "
                "(Engine(..., counter_sampler=...): lab-01 task 8)"
            )
        return int(counter_sampler(logits, request))
    probs = torch.softmax(apply_temperature_top_k(logits, params.temperature, params.top_k), dim=-1)
    return int(torch.multinomial(probs, 1, generator=request.generator))

"""Pick the next token from one request's logits."""

from __future__ import annotations

import torch

from minivllm.sequence import SamplingParams


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """Greedy when ``temperature == 0`` (argmax; ties go to the lowest id, so it is deterministic);
    otherwise one draw from ``generator``, which is why a moved request must carry the generator's state."""
    if params.temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.double() / params.temperature
    if 0 < params.top_k < logits.numel():
        kth_best = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))

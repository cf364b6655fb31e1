"""Test-side oracles shared by lab-01's spec files (test_*.py): the model, the sampling parameters, the
prompts, and the never-moved output every handoff is compared with. Not student code, not graded."""

from __future__ import annotations

import functools

from minivllm import Engine, ModelConfig, SamplingParams, TinyDecoder

CONFIG = ModelConfig()
MODEL = TinyDecoder(CONFIG)
GREEDY = SamplingParams(max_tokens=6)
SAMPLED = SamplingParams(temperature=0.9, top_k=24, max_tokens=6, seed=7)
PARAMS = {"greedy": GREEDY, "sampled": SAMPLED}


def make_prompt(n: int, salt: int = 1) -> list[int]:
    return [(salt * 37 + i * 11 + 5) % CONFIG.vocab_size for i in range(n)]


@functools.cache
def _reference(prompt: tuple[int, ...], params: SamplingParams) -> tuple[int, ...]:
    engine = Engine(MODEL, 64, 16)
    rid = engine.add_request(list(prompt), params)
    return tuple(engine.run_until_done()[rid])


def reference_output(prompt: list[int], params: SamplingParams) -> list[int]:
    """The never-moved output: the request alone on a fresh engine (no prefix caching)."""
    return list(_reference(tuple(prompt), params))

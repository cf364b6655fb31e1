"""The identity probe's pieces, shared by ``tools/probe_identity.py`` and the vllm tier's
``tests/test_kv_identity.py``: its prompts, the request body, and ``kv_compare`` (prefill's saved blocks vs
the blocks decode pulled, bit for bit, from ``pdpair.evidence.kv_dump``'s files)."""

from __future__ import annotations

import random
import time
from pathlib import Path

MAX_TOKENS = 32
DUMP_WAIT_S = 30.0


def prompts(extra: int) -> dict[str, list[int]]:
    """demo.py's prompts (same seed, same order) plus ``extra`` more of 600/1500 tokens, by name."""
    rng = random.Random(0)
    out = {f"demo-{n}": [rng.randrange(3, 32000) for _ in range(n)] for n in (1500, 1501, 600, 32)}
    rng = random.Random(1)
    for i in range(extra):
        n = (600, 1500)[i % 2]
        out[f"extra{i}-{n}"] = [rng.randrange(3, 32000) for _ in range(n)]
    return out


def completion(model: str, prompt: list[int]) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.0,
            "ignore_eos": True, "return_token_ids": True}  # fmt: skip


def answer(status: int, body) -> list[int]:
    """The token ids of a non-streaming completion answer; RuntimeError on an HTTP error."""
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {str(body)[:300]}")
    return body["choices"][0]["token_ids"]


def first_diff(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token, None when equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def kv_compare(dump_dir: Path, rid: str, n_tokens: int, block_size: int) -> dict:
    """Bit-for-bit: decode's pulled blocks against prefill's, over the first ``n_tokens`` token slots."""
    import torch

    p_path, d_path = dump_dir / f"prefill-{rid}.pt", dump_dir / f"decode-{rid}.pt"
    deadline = time.monotonic() + DUMP_WAIT_S
    while time.monotonic() < deadline and not (p_path.is_file() and d_path.is_file()):
        time.sleep(0.2)
    if not (p_path.is_file() and d_path.is_file()):
        return {"kv_equal": None, "kv_note": f"dump missing: {p_path.name} {p_path.is_file()}, "
                f"{d_path.name} {d_path.is_file()}"}  # fmt: skip
    time.sleep(0.5)  # torch.save may still be writing
    p, d = torch.load(p_path), torch.load(d_path)
    full, tail = divmod(n_tokens, block_size)
    dim = p["block_dim"]
    bad, shape = [], None
    for layer, pt in p["blocks"].items():
        dt = d["blocks"][layer]
        shape = tuple(pt.shape)
        if pt.shape != dt.shape:
            return {
                "kv_equal": False,
                "kv_note": f"{layer}: prefill {tuple(pt.shape)} decode {tuple(dt.shape)}",
            }
        pt, dt = pt.movedim(dim, 0), dt.movedim(dim, 0)
        tok_dims = [i for i, s in enumerate(pt.shape[1:], start=1) if s == block_size]
        same = torch.equal(pt[:full], dt[:full])
        if tail and len(tok_dims) == 1:
            same &= torch.equal(
                pt[full].narrow(tok_dims[0] - 1, 0, tail), dt[full].narrow(tok_dims[0] - 1, 0, tail)
            )
        elif tail:  # token slots not a plain dimension: compare the partial block whole
            same &= torch.equal(pt[full], dt[full])
        if not same:
            bad.append(layer)
    return {"kv_equal": not bad, "kv_layers": len(p["blocks"]), "kv_blocks": len(p["block_ids"]),
            "kv_layer_shape": shape, "kv_bad_layers": bad}  # fmt: skip

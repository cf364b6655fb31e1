"""The identity probe's pieces, shared by ``tools/probe_identity.py``, ``tools/repro_block_size.py`` and the
vllm tier's identity tests: the prompts, the request body, a spec whose two sides dump their KV
(``pdpair.evidence.kv_dump``), one handoff by hand, and the measurements the output oracle's threshold
rests on (``logit_shifts``). The decisions themselves are ``pdpair.evidence.oracle``'s."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pdpair.evidence import oracle
from pdpair.pair.spec import PairSpec, with_side

MAX_TOKENS = 32
DUMP_MODULE = "pdpair.evidence.kv_dump"


def prompts(extra: int) -> dict[str, list[int]]:
    """demo.py's prompts (same seed, same order) plus ``extra`` more of 600/1500 tokens, by name."""
    rng = random.Random(0)
    out = {f"demo-{n}": [rng.randrange(3, 32000) for _ in range(n)] for n in (1500, 1501, 600, 32)}
    rng = random.Random(1)
    for i in range(extra):
        n = (600, 1500)[i % 2]
        out[f"extra{i}-{n}"] = [rng.randrange(3, 32000) for _ in range(n)]
    return out


def completion(model: str, prompt: list[int], max_tokens: int = MAX_TOKENS) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "ignore_eos": True, "return_token_ids": True}  # fmt: skip


def answer(status: int, body) -> list[int]:
    """The token ids of a non-streaming completion answer; RuntimeError on an HTTP error."""
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {str(body)[:300]}")
    return body["choices"][0]["token_ids"]


first_diff = oracle.first_diff  # kept for callers of the old name


def with_dumps(spec: PairSpec, dump_dir: Path, sides: Sequence[str] = ("prefill", "decode")) -> PairSpec:
    """``spec`` with ``sides`` loading the KV-dumping connector, writing into ``dump_dir``."""
    for side in sides:
        s = getattr(spec, side)
        spec = with_side(spec, side, kv_connector_module_path=DUMP_MODULE,
                         env={**s.env, "PD_KV_DUMP_DIR": str(dump_dir)})  # fmt: skip
    return spec


def with_logits_mode(spec: PairSpec) -> PairSpec:
    """Both sides report raw logits for ``logprobs`` requests (``--logprobs-mode raw_logits``; the
    sampled tokens do not change: vLLM 0.32 ``v1/sample/sampler.py``, ``Sampler.forward``)."""
    for side in ("prefill", "decode"):
        s = getattr(spec, side)
        if "--logprobs-mode" not in s.extra_args:
            spec = with_side(spec, side, extra_args=[*s.extra_args, "--logprobs-mode", "raw_logits"])
    return spec


def handoff(impl, pair, body: dict, request_id: str) -> tuple[str, dict]:
    """YOUR prefill_request to prefill, YOUR decode_request to decode (``pdpair.pair.runner.post_json``);
    returns (prefill's request id for the dumps, decode's JSON answer)."""
    from pdpair.pair.runner import post_json

    pbody, headers = impl.prefill_request(body, request_id)
    st, pans, _ = post_json(pair.prefill.url + "/v1/completions", pbody, headers, timeout_s=240)
    if st != 200:
        raise RuntimeError(f"prefill HTTP {st}: {str(pans)[:300]}")
    st, dans, _ = post_json(pair.decode.url + "/v1/completions", impl.decode_request(body, pans), headers,
                            timeout_s=240)  # fmt: skip
    if st != 200:
        raise RuntimeError(f"decode HTTP {st}: {str(dans)[:300]}")
    return pans["kv_transfer_params"]["remote_request_id"], dans


def logit_shifts(ref: oracle.Reference, other: oracle.Reference) -> dict[str, Any]:
    """How far rounding moved logit DIFFERENCES between two runs while their tokens still agreed: at each
    position j before the first difference, for every token x in both top-k's, ``(ref[a]-ref[x]) -
    (other[a]-other[x])`` in ulps of ``|ref[a]|`` (a: the shared token). Also both gaps at the first
    difference. Needs logits on both (``with_logits``). The oracle's ``TIE_ULPS`` rests on these."""
    i = oracle.first_diff(ref.ids, other.ids)
    end = len(ref.ids) if i is None else i
    worst, n = 0.0, 0
    for j in range(min(end, len(ref.top or ()), len(other.top or ()))):
        rt, ot, a = ref.top[j], other.top[j], ref.ids[j]
        if not rt or not ot or a not in rt or a not in ot:
            continue
        unit = oracle.ulp(rt[a], ref.dtype)
        for x in set(rt) & set(ot) - {a}:
            worst = max(worst, abs((rt[a] - rt[x]) - (ot[a] - ot[x])) / unit)
            n += 1
    out: dict[str, Any] = {"shift_max_ulps": worst, "shift_pairs": n, "diff_at": i}
    if i is not None and i < min(len(ref.ids), len(other.ids)) and ref.top and other.top:
        a, b = ref.ids[i], other.ids[i]
        rt, ot = ref.top[i] or {}, other.top[i] or {}
        if a in rt:
            unit = oracle.ulp(rt[a], ref.dtype)
            out["ulp"] = unit
            out["ref_gap_ulps"] = (rt[a] - rt[b]) / unit if b in rt else None
            out["other_gap_ulps"] = (ot[b] - ot[a]) / unit if a in ot and b in ot else None
    return out


def row_map(p_rows, d_rows, n: int) -> list[str]:
    """Where each run of decode token rows came from in prefill's KV (``p_rows``/``d_rows``: dicts
    ``{"K": [T, C], "V": [T, C]}`` of one head and layer, token order): e.g. ``["K t0-31 = prefill K
    t0-31", "K t32-63 = prefill V t0-31", ...]``; ``zero`` for all-zero rows, ``?`` for rows found nowhere."""
    import torch

    index: dict[bytes, list[str]] = {}
    for name in ("K", "V"):
        for t in range(n):
            index.setdefault(p_rows[name][t].contiguous().view(torch.int16).numpy().tobytes(), []).append(
                f"{name}{t}"
            )
    runs: list[str] = []
    for name in ("K", "V"):
        prev = first_src = None
        start = 0
        for t in range(n):
            row = d_rows[name][t]
            if not bool(row.any()):
                src = "zero"
            else:  # a row found several times (layer 0's V of a repeated prompt token): the one that continues
                found = index.get(row.contiguous().view(torch.int16).numpy().tobytes(), ["?"])
                src = next((f for f in found if prev is not None and _continues(prev, f)), found[0])
            if prev is None or not _continues(prev, src):
                if prev is not None:
                    runs.append(_run(name, start, t - 1, first_src, prev))
                start, first_src = t, src
            prev = src
        runs.append(_run(name, start, n - 1, first_src, prev))
    return runs


def _continues(prev: str, src: str) -> bool:
    if prev in ("zero", "?") or src in ("zero", "?"):
        return prev == src
    return prev[0] == src[0] and int(src[1:]) == int(prev[1:]) + 1


def _run(name: str, a: int, b: int, first: str, last: str) -> str:
    if first in ("zero", "?"):
        return f"{name} t{a}-{b} = {'zeros' if first == 'zero' else 'found nowhere in prefill'}"
    return f"{name} t{a}-{b} = prefill {first[0]} t{first[1:]}-{last[1:]}"

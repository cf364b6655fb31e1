"""The output oracle: did the P/D handoff change the output? One answer for every place that compares a
disaggregated output with a colocated one (the vllm tier, the compatibility matrix, ``demo.py --real``,
the Dynamo tier, ``probe_identity.py``). Reference: ``docs/oracle.md``.

Greedy output of a bf16 model is not a portable fingerprint: decode recomputes the last prompt token as
one query row against the pulled KV where the colocated run computed it inside one long prefill (vLLM 0.32
``v1/core/sched/scheduler.py``, ``_update_waiting_for_remote_kv``: ``num_computed_tokens = num_tokens - 1``),
the kernels round differently, and greedy decoding flips wherever two logits are (nearly) tied. Which
positions flip depends on the CPU (AVX-512 BF16 or not). So the oracle decides in three parts:

(a) ``kv``: the KV decode pulled equals the KV prefill computed, bit for bit, for every prompt token slot
    and every KV head (``compare_kv`` over ``pdpair.evidence.kv_dump``'s files). Unequal bits are a
    corruption, whatever the tokens say; a single flipped byte is caught here even when the output is
    unchanged.
(b) tokens: equal to colocated -> ``same`` (branch ``tokens``). Otherwise only the FIRST differing
    position matters (after it the contexts differ). There, the colocated run's logits for its own token
    ``a`` and the P/D token ``b`` must be a near-tie: ``l_a - l_b <= TIE_ULPS * ulp(|l_a|)`` in the
    model dtype -> ``rounding_drift`` (branch ``near_tie``); a larger gap -> ``corruption`` (branch
    ``logit_gap``): rounding cannot move a logit difference that far.
(c) ``float32``: where (b) cannot decide (no logits at that position, or ``b`` outside the reference's
    top-k while the top-k is itself within the tie band), the same two runs in float32 decide: their
    tokens must be equal (and their KV equal where dumped) -> ``rounding_drift``, else ``corruption``.
    Without float32 evidence the verdict is ``undecided`` (never silently "fine").

Why ``TIE_ULPS`` (derivation and measurements in ``docs/oracle.md``): vLLM computes the logits in the
model dtype and casts them to float32 in the sampler (``v1/sample/sampler.py``, ``Sampler.forward``), so
two logits near magnitude M are each rounded to bf16 once (up to half an ulp each: one ulp of M for the
difference, ulp(M) = 2^(floor(log2 M) - 7), between M*2^-8 and M*2^-7), on top of which the hidden state
differs by the rounding the two kernels do over the layers. Measured here (AMD EPYC; the matrix's 17
drifts and ``probe_identity.py``): the colocated gap at the first differing position was 0-3 ulps, and
logit differences between the two runs at positions where they still agreed moved by at most 3 ulps;
``TIE_ULPS = 8`` leaves margin for another CPU while corrupted outputs' first divergences sat at 17-54 ulps.

The colocated run reports its logits when started with ``--logprobs-mode raw_logits``
(``pdpair.pair.runner.run_colocated`` does) and asked for ``logprobs`` with
``return_tokens_as_token_ids`` (``with_logits``): ``skip_tokenizer_init`` servers cannot name tokens
otherwise (vLLM 0.32 ``entrypoints/generate/base/serving.py``, ``_get_decoded_token``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TOP_K = 20  # top logits the colocated reference asks for at every position (vLLM's default max_logprobs)
TIE_ULPS = 8  # a near-tie: the colocated gap is at most this many ulps of the larger logit
MANTISSA_BITS = {"bfloat16": 7, "float16": 10, "float32": 23}  # explicit significand bits per dtype
DUMP_WAIT_S = 30.0

SAME, DRIFT, CORRUPTION, UNDECIDED = "same", "rounding_drift", "corruption", "undecided"
OK = (SAME, DRIFT)  # the handoff did not change the output
BRANCHES = ("kv", "tokens", "near_tie", "logit_gap", "float32", "none")


# ------------------------------------------------------------------------------------------ references


@dataclass(frozen=True)
class Reference:
    """A greedy output with the logits of the top tokens at each position (``top[i]``: token id -> logit;
    None where not recorded). ``dtype``: the model dtype the logits were rounded to."""

    ids: tuple[int, ...]
    top: tuple[dict[int, float] | None, ...] | None = None
    dtype: str = "bfloat16"

    @classmethod
    def of(cls, ids: Sequence[int], top: Sequence[dict[int, float] | None] | None = None,
           dtype: str = "bfloat16") -> Reference:  # fmt: skip
        return cls(tuple(ids), None if top is None else tuple(top), dtype)

    def as_dict(self) -> dict[str, Any]:
        top = None if self.top is None else [None if t is None else {str(k): v for k, v in t.items()}
                                             for t in self.top]  # fmt: skip
        return {"ids": list(self.ids), "top": top, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | Sequence[int]) -> Reference:
        """From ``as_dict`` output, or a plain list of ids (an old recording: no logits)."""
        if not isinstance(d, dict):
            return cls.of(d)
        top = d.get("top")
        top = None if top is None else [None if t is None else {int(k): float(v) for k, v in t.items()}
                                        for t in top]  # fmt: skip
        return cls.of(d["ids"], top, d.get("dtype", "bfloat16"))


def with_logits(body: dict[str, Any], k: int = TOP_K) -> dict[str, Any]:
    """``body`` (a completions request) asking for the top-``k`` logits per position, as token ids."""
    return {**body, "logprobs": k, "return_tokens_as_token_ids": True}


def _token_id(key: str) -> int:
    return int(key.rsplit(":", 1)[-1])  # "token_id:123" (vLLM's placeholder) or "123"


def top_of(logprobs: dict[str, Any] | None) -> list[dict[int, float] | None]:
    """The per-position ``{token id: value}`` of one choice's ``logprobs`` object (completions API)."""
    if not logprobs:
        return []
    return [None if step is None else {_token_id(k): float(v) for k, v in step.items()}
            for step in logprobs.get("top_logprobs") or []]  # fmt: skip


def reference_from_answer(body: dict[str, Any] | None = None, events: Iterable[dict[str, Any]] = (),
                          dtype: str = "bfloat16") -> Reference:  # fmt: skip
    """A ``Reference`` from a completions answer: a JSON ``body`` or the SSE ``events`` of a stream."""
    ids: list[int] = []
    top: list[dict[int, float] | None] = []
    choices = list((body or {}).get("choices") or [])
    for event in events:
        choices += event.get("choices") or []
    for choice in choices:
        ids += list(choice.get("token_ids") or [])
        top += top_of(choice.get("logprobs"))
    return Reference.of(ids, top if len(top) == len(ids) and top else None, dtype)


# --------------------------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class KvCheck:
    """Part (a): ``equal`` True/False, or None where nothing was dumped; ``detail`` says where bits differ."""

    equal: bool | None
    detail: str = ""
    layers: int = 0
    heads: int = 0
    tokens: int = 0
    bad: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    outcome: str  # SAME | DRIFT | CORRUPTION | UNDECIDED
    branch: str  # which part decided: kv | tokens | near_tie | logit_gap | float32 | none
    detail: str
    diff_at: int | None = None  # first differing position
    gap_ulps: float | None = None  # colocated l_a - l_b there, in ulps of |l_a|
    kv_equal: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The handoff did not change the output (identical, or rounding drift)."""
        return self.outcome in OK

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


def ulp(x: float, dtype: str = "bfloat16") -> float:
    """The spacing of ``dtype`` numbers at magnitude ``|x|`` (its normal range), e.g. ``ulp(6.0) = 2**-5``."""
    bits = MANTISSA_BITS[dtype]
    x = abs(x)
    if x == 0 or not math.isfinite(x):
        return 2.0 ** (-126 - bits)
    return 2.0 ** (math.floor(math.log2(x)) - bits)


def first_diff(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first differing token, None when equal (a shorter one differs where it ends)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _gap(ref: Reference, i: int, b: int) -> tuple[float | None, float | None, str]:
    """(gap in ulps, lower bound in ulps, note) of the colocated logits at position ``i`` for ref's token
    vs ``b``: the exact gap when both are in the top-k, else a lower bound (b is below the k-th)."""
    top = ref.top[i] if ref.top is not None and i < len(ref.top) else None
    a = ref.ids[i]
    if not top or a not in top:
        return None, None, f"no colocated logits at position {i}"
    unit = ulp(top[a], ref.dtype)
    if b in top:
        return (top[a] - top[b]) / unit, None, f"colocated logits at {i}: {a}={top[a]:.5g}, {b}={top[b]:.5g}"
    low = (top[a] - min(top.values())) / unit
    return None, low, f"token {b} not in the colocated top-{len(top)} at {i} (k-th {min(top.values()):.5g})"


def judge(
    ref: Reference,
    got: Sequence[int],
    *,
    kv: KvCheck | None = None,
    float32: tuple[Reference, Sequence[int]] | None = None,
    float32_kv: KvCheck | None = None,
    tie_ulps: float = TIE_ULPS,
) -> Verdict:
    """Did the handoff change the output? ``ref``: the colocated output (with logits for part b);
    ``got``: the P/D output; ``kv``: part (a) for this request (None: not dumped); ``float32``: the same
    prompt's (colocated reference, P/D output) in float32, for part (c). See the module docstring."""
    got = list(got)
    kv_equal = None if kv is None else kv.equal
    if kv is not None and kv.equal is False:
        return Verdict(CORRUPTION, "kv", f"decode's pulled KV differs from prefill's: {kv.detail}",
                       first_diff(ref.ids, got), None, False)  # fmt: skip
    i = first_diff(ref.ids, got)
    if i is None:
        return Verdict(SAME, "tokens", f"{len(got)} tokens equal to colocated", None, None, kv_equal)
    if i >= len(ref.ids) or i >= len(got):
        return Verdict(CORRUPTION, "tokens", f"{len(got)} tokens where colocated gave {len(ref.ids)}",
                       i, None, kv_equal)  # fmt: skip
    gap, low, note = _gap(ref, i, got[i])
    if gap is not None and gap <= tie_ulps:
        return Verdict(DRIFT, "near_tie", f"first difference at {i} is a near-tie ({gap:g} ulps <= {tie_ulps}): "
                       f"{note}", i, gap, kv_equal)  # fmt: skip
    if gap is not None or (low is not None and low > tie_ulps):
        shown = gap if gap is not None else low
        return Verdict(CORRUPTION, "logit_gap", f"first difference at {i} is no near-tie "
                       f"({'' if gap is not None else '>= '}{shown:g} ulps > {tie_ulps}): {note}", i, shown, kv_equal)  # fmt: skip
    if float32 is not None:
        ref32, got32 = float32
        if float32_kv is not None and float32_kv.equal is False:
            return Verdict(CORRUPTION, "float32", f"({note}) float32 run: pulled KV differs: {float32_kv.detail}",
                           i, None, kv_equal)  # fmt: skip
        j = first_diff(ref32.ids, got32)
        if j is None:
            return Verdict(DRIFT, "float32", f"({note}) float32: P/D equals colocated ({len(got32)} tokens)",
                           i, None, kv_equal)  # fmt: skip
        return Verdict(CORRUPTION, "float32", f"({note}) float32: P/D differs from colocated at {j}",
                       i, None, kv_equal)  # fmt: skip
    return Verdict(UNDECIDED, "none", f"first difference at {i}: {note}; no float32 run to decide", i,
                   low, kv_equal)  # fmt: skip


def check(ref: Reference, got: Sequence[int], what: str = "", **kwargs: Any) -> Verdict:
    """``judge``, raising AssertionError (with both outputs) unless the handoff left the output unchanged."""
    v = judge(ref, got, **kwargs)
    assert v.ok, (f"{what}: the handoff changed the output ({v.outcome}, decided by {v.branch}): {v.detail}"
                  f"\n colocated {list(ref.ids)}\n P/D       {list(got)}")  # fmt: skip
    return v


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The verdict a set of probes gets: the first corruption, else undecided, else drift, else same."""
    order = {CORRUPTION: 0, UNDECIDED: 1, DRIFT: 2, SAME: 3}
    vs = list(verdicts)
    return min(vs, key=lambda v: order[v.outcome]) if vs else None


# ------------------------------------------------------------------------------ part (a): the KV bits


def token_rows(blocks, backend: str, layout: dict[str, Any] | None = None):
    """``(K, V)``, each ``[heads, blocks*N, head_size]`` in token order, from cache blocks
    ``[blocks, heads, N, 2*head_size]`` as vLLM 0.32 lays them out for ``backend``:

    - ``CPU_ATTN``: each head's ``[2N, head_size]`` view is its K region then its V region
      (``v1/attention/backends/cpu_attn.py``, ``kv_cache.view(num_blocks, num_kv_heads, block_size * 2, -1)``
      then ``chunk(2, dim=2)``), each in the order of the ISA's cache writer: ``layout`` (``kv_dump``
      records it: ``{"isa", "k", "v"}``, ``pdpair.pair.fixes.region_keys``) says which token and dim each
      position holds;
    - otherwise (FlashAttention and the token-major backends): each token row is ``[K_t | V_t]``
      (``flash_attn.py``: ``kv_cache.transpose(1, 2).split(self.head_size, dim=-1)``)."""
    import torch

    nb, h, n, c2 = blocks.shape
    c = c2 // 2
    if backend == "CPU_ATTN":
        if layout is None:
            raise ValueError("a CPU_ATTN dump must carry its block layout (kv_dump records it)")
        region = blocks.reshape(nb, h, 2, n * c)
        out = torch.empty(2, nb, h, n * c, dtype=blocks.dtype)
        out[0][..., layout["k"]] = region[:, :, 0]
        out[1][..., layout["v"]] = region[:, :, 1]
        kv = out.view(2, nb, h, n, c).permute(0, 2, 1, 3, 4).reshape(2, h, nb * n, c)
        return kv[0], kv[1]
    k, v = blocks[..., :c], blocks[..., c:]
    return (k.permute(1, 0, 2, 3).reshape(h, nb * n, c), v.permute(1, 0, 2, 3).reshape(h, nb * n, c))


def heads_of_rank(rank: int, tp: int, total_heads: int) -> list[int]:
    """The KV heads a TP rank holds (vLLM: ``QKVParallelLinear`` splits the heads; with more ranks than
    heads each rank holds one head, replicated: ``rank * heads // tp``)."""
    if tp <= total_heads:
        per = total_heads // tp
        return list(range(rank * per, (rank + 1) * per))
    return [rank * total_heads // tp]


def side_heads(dumps: Sequence[dict[str, Any]]) -> dict[str, dict[int, list[tuple[int, Any, Any]]]]:
    """``{layer: {head: [(rank, K, V), ...]}}`` from one side's per-rank dumps (``kv_dump`` format)."""
    out: dict[str, dict[int, list[tuple[int, Any, Any]]]] = {}
    for d in dumps:
        heads = heads_of_rank(d["tp_rank"], d["tp_size"], d["total_kv_heads"])
        for layer, blocks in d["blocks"].items():
            k, v = token_rows(blocks.movedim(d.get("block_dim", 0), 0), d["attn_backend"], d.get("layout"))
            if k.shape[0] != len(heads):
                raise ValueError(f"{layer}: rank {d['tp_rank']} holds {k.shape[0]} heads, expected {heads}")
            for j, head in enumerate(heads):
                out.setdefault(layer, {}).setdefault(head, []).append((d["tp_rank"], k[j], v[j]))
    return out


def _bits(t):
    import torch

    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(ints[t.element_size()])


def _first_bad_token(a, b) -> int:
    import torch

    rows = (_bits(a) != _bits(b)).reshape(a.shape[0], -1).any(dim=1)
    return int(torch.nonzero(rows)[0, 0])


def compare_kv(prefill: Sequence[dict[str, Any]], decode: Sequence[dict[str, Any]], n_tokens: int) -> KvCheck:
    """Part (a): every KV head of every layer, K and V of the first ``n_tokens`` token slots, bit for bit,
    prefill's dumps against decode's (any TP on either side, any block sizes: both are unpacked to token
    order first). Every head must be present on both sides; a replicated head must match on every rank."""
    import torch

    p, d = side_heads(prefill), side_heads(decode)
    if set(p) != set(d):
        return KvCheck(False, f"layers differ: prefill {sorted(p)[:3]}..., decode {sorted(d)[:3]}...")
    bad: list[str] = []
    heads = 0
    for layer in p:
        if set(p[layer]) != set(d[layer]):
            return KvCheck(False, f"{layer}: heads prefill {sorted(p[layer])} decode {sorted(d[layer])}")
        heads = len(p[layer])
        for head, p_copies in p[layer].items():
            _, pk, pv = p_copies[0]
            if pk.shape[0] < n_tokens:
                return KvCheck(
                    False, f"{layer} head {head}: prefill holds {pk.shape[0]} token slots < {n_tokens}"
                )
            for rank, dk, dv in d[layer][head]:
                if dk.shape[0] < n_tokens:
                    return KvCheck(False, f"{layer} head {head}: decode rank {rank} holds {dk.shape[0]} "
                                   f"token slots < {n_tokens}")  # fmt: skip
                for name, a, b in (("K", pk, dk), ("V", pv, dv)):
                    if not torch.equal(_bits(a[:n_tokens]), _bits(b[:n_tokens])):
                        t = _first_bad_token(a[:n_tokens], b[:n_tokens])
                        bad.append(f"{layer} head {head} {name} (decode rank {rank}) from token {t}")
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        return KvCheck(False, "; ".join(bad[:3]) + more, len(p), heads, n_tokens, tuple(bad))
    return KvCheck(
        True, f"{len(p)} layers x {heads} heads x {n_tokens} tokens bit-identical", len(p), heads, n_tokens
    )


def dump_files(dump_dir: Path, side: str, rid: str) -> list[Path]:
    return sorted(Path(dump_dir).glob(f"{side}-{rid}.tp*.pt"))


def load_dumps(dump_dir: Path, side: str, rid: str, wait_s: float = DUMP_WAIT_S) -> list[dict[str, Any]]:
    """Every rank's dump of one side for request ``rid`` (``kv_dump``'s ``<side>-<rid>.tp<rank>.pt``),
    waiting up to ``wait_s`` for all ``tp_size`` of them (prefill dumps when decode's read completes)."""
    import torch

    deadline = time.monotonic() + wait_s
    while True:
        files = dump_files(dump_dir, side, rid)
        ready = [f for f in files if f.with_suffix(".done").is_file()]
        if ready:
            first = torch.load(ready[0])
            if len(ready) >= first["tp_size"]:
                return [first] + [torch.load(f) for f in ready[1:]]
        if time.monotonic() > deadline:
            return [torch.load(f) for f in ready]
        time.sleep(0.2)


def kv_check(dump_dir: Path, rid: str, n_tokens: int, wait_s: float = DUMP_WAIT_S) -> KvCheck:
    """Part (a) for one handed-off request (``rid``: prefill's request id, ``remote_request_id``)."""
    p = load_dumps(dump_dir, "prefill", rid, wait_s)
    d = load_dumps(dump_dir, "decode", rid, wait_s)
    if not p or not d:
        return KvCheck(None, f"no dump: prefill {len(p)} rank file(s), decode {len(d)} for {rid}")
    if len(p) != p[0]["tp_size"] or len(d) != d[0]["tp_size"]:
        return KvCheck(
            None, f"incomplete dump: prefill {len(p)}/{p[0]['tp_size']}, decode {len(d)}/{d[0]['tp_size']}"
        )
    return compare_kv(p, d, n_tokens)


def dumped_requests(dump_dir: Path) -> set[str]:
    """Request ids with a finished decode dump in ``dump_dir`` (for probes whose id the proxy chose)."""
    return {f.name[len("decode-") :].rsplit(".tp", 1)[0] for f in Path(dump_dir).glob("decode-*.tp*.done")}


def verdict_json(v: Verdict) -> str:
    return json.dumps(v.as_dict(), sort_keys=True)

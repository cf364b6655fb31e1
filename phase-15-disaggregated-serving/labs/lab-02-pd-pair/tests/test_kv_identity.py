"""Ungraded, ``vllm`` tier: the KV decode pulls over NIXL is bit for bit the KV prefill computed.

The check ``identity.py`` records (README, "make demo-live"): both sides load ``pdpair.evidence.kv_dump``,
which saves prefill's blocks for a request and the blocks decode pulled, before decode recomputes the
last prompt token; every prompt token slot must be equal. This is what separates a transfer fault (wrong,
partial or stale blocks) from the bf16 rounding that can make a P/D output differ from a colocated one.
It starts its own pair (a minute or more on 2 cores): ``PDPAIR_LONG_DRILLS=1`` (``make test-vllm``) runs it.
It loads solution.py itself: it checks vLLM and the plumbing, whatever LAB_IMPL grades.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from labkit.impl import load_module
from pdpair.evidence import identity
from pdpair.pair.runner import post_json, prepare_spec, run_pair, served_name
from pdpair.pair.spec import load_pair_spec, with_side

pytestmark = [
    pytest.mark.ungraded,
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("PDPAIR_LONG_DRILLS") != "1",
        reason="starts its own pair with the KV-dumping connector: PDPAIR_LONG_DRILLS=1 runs it",
    ),
]
LAB = Path(__file__).resolve().parents[1]  # the lab folder
LOG_DIR = LAB / "out" / "logs"
STARTUP_S = 900.0


def test_pulled_kv_is_bit_identical_to_prefills():

    solution = load_module(LAB / "solution.py")
    dump_dir = Path(tempfile.mkdtemp(prefix="pdpair-kv-dump-"))
    spec = prepare_spec(load_pair_spec(LAB / "pair.cpu.yaml"))
    for side in ("prefill", "decode"):
        s = getattr(spec, side)
        spec = with_side(spec, side, kv_connector_module_path="pdpair.evidence.kv_dump",
                         env={**s.env, "PD_KV_DUMP_DIR": str(dump_dir)})  # fmt: skip
    prompts = identity.prompts(extra=0)
    try:
        with run_pair(solution, spec, log_dir=LOG_DIR, startup_timeout_s=STARTUP_S, with_proxy=False) as pair:
            for i, (name, prompt) in enumerate(prompts.items()):
                body = identity.completion(served_name(spec), prompt)
                pbody, headers = solution.prefill_request(body, f"kv-identity-{i}")
                st, answer, _ = post_json(pair.prefill.url + "/v1/completions", pbody, headers)
                assert st == 200, answer
                dbody = solution.decode_request(body, answer)
                st, out, _ = post_json(pair.decode.url + "/v1/completions", dbody, headers)
                assert st == 200 and len(out["choices"][0]["token_ids"]) == identity.MAX_TOKENS, out
                rid = answer["kv_transfer_params"]["remote_request_id"]
                seen = identity.kv_compare(dump_dir, rid, len(prompt), spec.decode.block_size)
                print(f"{name}: {seen}")
                assert seen["kv_equal"] is True, f"{name}: decode's pulled KV differs from prefill's: {seen}"
                assert seen["kv_blocks"] == -(-len(prompt) // spec.decode.block_size), seen
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)

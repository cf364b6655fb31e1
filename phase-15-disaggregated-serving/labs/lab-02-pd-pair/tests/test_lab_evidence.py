"""lab-02 task 6, graded: did the KV move? ``kv_verdict`` on decode's own counters and the ``canary``.

The recordings in ``captures/kv-evidence`` are decode's real ``/metrics`` text around each way a
handoff went on the vLLM 0.32 CPU pair (``tools/record_kv_evidence.py``; its manifest holds the
statuses). The canary runs against the fake upstreams (``pdpair.testing.fakes``), whose counters move
as those recordings do.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from pdpair import LAB_DIR
from pdpair.testing.fakes import DecodeCounters, FakeDecode, FakePrefill
from pdpair.testing.harness import run

pytestmark = pytest.mark.lab02_task6

RECORDED = LAB_DIR / "captures" / "kv-evidence"
MANIFEST = json.loads((RECORDED / "manifest.json").read_text())
# what each recorded path was (tools/record_kv_evidence.py) and so what its counters must say
RECORDED_VERDICTS = {
    "handoff_ok": "kv_moved",
    "no_params": "prefilled_locally",
    "forged_engine_fail": "kv_load_failed",
    "prefill_killed_fail": "kv_load_failed",
    "forged_engine_recompute": "kv_load_failed",
    "prefill_killed_recompute": "kv_load_failed",
    "no_connector": "no_connector",
}


def _recorded(name: str) -> tuple[str, str, int]:
    path = MANIFEST["paths"][name]
    return ((RECORDED / f"{name}.before.prom").read_text(), (RECORDED / f"{name}.after.prom").read_text(),
            path["prompt_tokens"])  # fmt: skip


@pytest.mark.parametrize("name", list(RECORDED_VERDICTS))
def test_kv_verdict_on_the_real_pairs_counters(impl, name):
    before, after, n = _recorded(name)
    status = MANIFEST["paths"][name]["status"]
    got = impl.kv_verdict(before, after, n)
    assert got == RECORDED_VERDICTS[name], (
        f"{name} (decode answered HTTP {status}): decode's counters around this {n}-token request say "
        f"{RECORDED_VERDICTS[name]!r}, kv_verdict said {got!r}. Look at which counters moved: "
        "the admission counters (p2p cached tokens, external prefix-cache hits) move even when the "
        "load failed")  # fmt: skip


# ----------------------------------------------------------------------- counters written by hand

BASE = 'engine="0",model_name="tiny-llama"'


def exposition(values: dict[str, float], nixl: bool = True, engines: tuple[str, ...] = ("0",)) -> str:
    """Decode's /metrics in vLLM's shape: HELP/TYPE lines, labels, _created samples, histogram buckets."""
    v = {"external_kv_transfer": 0.0, "local_cache_hit": 0.0, "local_compute": 0.0, "reads": 0.0, "failed": 0.0,
         "p2p": 0.0, **values}  # fmt: skip
    lines = ["# HELP vllm:prompt_tokens_by_source_total Number of prompt tokens by source.",
             "# TYPE vllm:prompt_tokens_by_source_total counter"]  # fmt: skip
    for e in engines:
        share = 1.0 if e == engines[-1] else 0.0  # everything on the last engine
        labels = f'engine="{e}",model_name="tiny-llama"'
        for src in ("local_compute", "local_cache_hit", "external_kv_transfer"):
            lines.append(f'vllm:prompt_tokens_by_source_total{{{labels},source="{src}"}} {v[src] * share}')
            lines.append(f'vllm:prompt_tokens_by_source_created{{{labels},source="{src}"}} 1.7e9')
        lines.append(f'vllm:prompt_tokens_cached_by_source_total{{{labels},source="p2p"}} {v["p2p"] * share}')
        if nixl:
            lines += [f'vllm:nixl_xfer_time_seconds_bucket{{{labels},le="0.001"}} 0.0',
                      f'vllm:nixl_xfer_time_seconds_bucket{{{labels},le="+Inf"}} {v["reads"] * share}',
                      f"vllm:nixl_xfer_time_seconds_count{{{labels}}} {v['reads'] * share}",
                      f"vllm:nixl_xfer_time_seconds_sum{{{labels}}} {0.004 * v['reads'] * share}",
                      f"vllm:nixl_num_failed_transfers_total{{{labels}}} {v['failed'] * share}"]  # fmt: skip
    return "\n".join(lines) + "\n"


START = {"external_kv_transfer": 1000.0, "local_compute": 300.0, "local_cache_hit": 64.0, "reads": 10.0,
         "failed": 1.0, "p2p": 1100.0}  # fmt: skip


def moved(**delta: float) -> dict[str, float]:
    return {k: START.get(k, 0.0) + delta.get(k, 0.0) for k in set(START) | set(delta)}


HAND_MADE = {  # case -> (after-state deltas, nixl series present, prompt tokens, verdict)
    "moved": (dict(external_kv_transfer=64, reads=1, p2p=64), True, 64, "kv_moved"),
    "moved_beside_a_local_prefix_hit": (dict(external_kv_transfer=32, local_cache_hit=32, reads=1), True, 64, "kv_moved"),
    "admission_only_the_load_failed": (dict(p2p=64, failed=2), True, 64, "kv_load_failed"),
    "recomputed_is_a_failure_first": (dict(local_compute=64, failed=1, p2p=64), True, 64, "kv_load_failed"),
    "computed_by_decode": (dict(local_compute=64), True, 64, "prefilled_locally"),
    "decode_without_a_connector": (dict(local_compute=64), False, 64, "no_connector"),
    "nothing_moved": ({}, True, 64, "inconclusive"),
    "two_requests_moved": (dict(external_kv_transfer=128, reads=2), True, 64, "inconclusive"),
    "counted_but_never_read": (dict(external_kv_transfer=64), True, 64, "inconclusive"),
    "read_but_all_from_decodes_cache": (dict(local_cache_hit=64, reads=1), True, 64, "inconclusive"),
    "short_of_the_prompt": (dict(external_kv_transfer=32, reads=1), True, 64, "inconclusive"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HAND_MADE))
def test_kv_verdict_rules_and_their_order(impl, case):
    delta, nixl, n, want = HAND_MADE[case]
    before = exposition(START, nixl=nixl)
    after = exposition(moved(**delta), nixl=nixl)
    got = impl.kv_verdict(before, after, n)
    assert got == want, (
        f"{case}: decode's counters moved by {delta} for a {n}-token prompt: want {want!r}, got {got!r}"
    )


def test_kv_verdict_sums_every_engine_and_counts_a_missing_series_as_zero(impl):
    before = exposition({}, engines=("0", "1"))
    after = exposition({"external_kv_transfer": 64, "reads": 1}, engines=("0", "1"))
    assert impl.kv_verdict(before, after, 64) == "kv_moved", (
        "a decode with two engines (data parallel): sum them"
    )
    first = "\n".join(line for line in exposition({}).splitlines() if "nixl" not in line) + "\n"
    assert impl.kv_verdict(first, exposition({"external_kv_transfer": 64, "reads": 1}), 64) == "kv_moved", (
        "a series absent from the first snapshot counts as 0")  # fmt: skip


def without(text: str, *names: str) -> str:
    """``text`` without the samples (and HELP/TYPE lines) of the series whose names start with ``names``."""
    return "\n".join(ln for ln in text.splitlines() if not any(n in ln for n in names)) + "\n"


def test_kv_verdict_refuses_snapshots_that_do_not_compare(impl):
    with pytest.raises(ValueError):  # decode restarted between the two reads: counters went down
        impl.kv_verdict(exposition(START), exposition({"external_kv_transfer": 64, "reads": 1}), 64)
    for bad in (0, -1, True, 2.5, "64"):
        with pytest.raises(ValueError):
            impl.kv_verdict(exposition({}), exposition({"external_kv_transfer": 64, "reads": 1}), bad)
        with pytest.raises(ValueError):  # checked before any verdict: a decode without a connector too
            impl.kv_verdict(exposition({}, nixl=False), exposition({"local_compute": 64}, nixl=False), bad)


@pytest.mark.parametrize("gone", ["vllm:nixl_", "vllm:nixl_num_failed_transfers", 'source="local_compute"'])
def test_kv_verdict_refuses_a_counter_that_vanished(impl, gone):
    """The docstring: a counter in ``before`` and missing from ``after`` is a restart, a ValueError, even
    at 0 and even when every ``vllm:nixl_`` series vanished (that is not rule 1's ``no_connector``: the
    ``before`` decode had a connector)."""
    before = exposition(START)
    after = without(exposition(moved(local_compute=64)), gone)
    with pytest.raises(ValueError):
        impl.kv_verdict(before, after, 64)
    zero_before = exposition({})  # the counters at 0, then gone: still another process
    with pytest.raises(ValueError):
        impl.kv_verdict(zero_before, without(exposition({"local_compute": 64}), gone), 64)


def test_an_admission_counter_going_down_is_a_restart_too(impl):
    """The ValueError covers every counter the docstring lists, the admission counters included: the
    verdict never uses them as proof, but one going down still says decode restarted in between."""
    before = exposition(START)
    after = exposition(moved(external_kv_transfer=64, reads=1) | {"p2p": 36.0})
    with pytest.raises(ValueError):
        impl.kv_verdict(before, after, 64)


def test_no_connector_means_no_nixl_series_at_all(impl):
    """``no_connector`` is "no ``vllm:nixl_`` series at all": one NIXL series (here the failure counter
    alone) shows a connector, and the verdict comes from the other rules."""
    before = without(exposition(START), "vllm:nixl_xfer_time_seconds")
    after = without(exposition(moved(local_compute=64)), "vllm:nixl_xfer_time_seconds")
    got = impl.kv_verdict(before, after, 64)
    assert got == "prefilled_locally", (
        f"decode has a connector (its vllm:nixl_num_failed_transfers_total is there) and computed the prompt "
        f"itself: want 'prefilled_locally', got {got!r}")  # fmt: skip


# ------------------------------------------------------------------------------- the canary (fakes)


def _canary(impl, prefill_kw=None, decode_kw=None, tamper=None, kill_prefill=False) -> tuple[str, FakeDecode]:
    async def scenario():
        async with FakePrefill(**(prefill_kw or {})) as p:
            async with FakeDecode(prefills=[p], **(decode_kw or {})) as d:
                if tamper is not None:
                    p.issued = tamper(p.issued)
                if kill_prefill:
                    await p.kill()
                got = await asyncio.to_thread(
                    impl.canary, p.url, d.url, "tiny", list(range(100, 164)), "canary-1"
                )
                return got, d

    return run(scenario())


def test_canary_on_a_healthy_pair_says_the_kv_moved(impl):
    got, d = _canary(impl)
    assert got == "kv_moved", f"a healthy pair: the canary must say 'kv_moved', got {got!r}"
    (seen,) = d.requests
    assert seen.request_id == "canary-1" and not seen.body.get("stream"), (
        f"the decode hop is non-streaming and carries the request id, got {seen.request_id!r} {seen.body}")  # fmt: skip


class ForgetfulDict(dict):
    """Prefill's record of what it issued, emptied: the params decode receives match nothing."""

    def __setitem__(self, key, value):  # noqa: D401
        pass


CANARY_CASES = {  # case -> (fake settings, verdict)
    "decode_without_a_connector": ({"decode_kw": {"connector": False}}, "no_connector"),
    "kv_load_fails_under_fail": ({"tamper": lambda issued: ForgetfulDict()}, "kv_load_failed"),
    "kv_load_fails_under_recompute": ({"tamper": lambda issued: ForgetfulDict(),
                                       "decode_kw": {"kv_load_failure_policy": "recompute"}}, "kv_load_failed"),
    "prefill_without_a_connector": ({"prefill_kw": {"issue_params": False}}, "no_kv_transfer_params"),
    "prefill_answers_500": ({"prefill_kw": {"behaviour": "error500"}}, "prefill_error"),
    "prefill_down": ({"kill_prefill": True}, "prefill_error"),
    "decode_answers_500": ({"decode_kw": {"behaviour": "error500"}}, "decode_error"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CANARY_CASES))
def test_canary_names_what_is_broken(impl, case):
    settings, want = CANARY_CASES[case]
    got, d = _canary(impl, **settings)
    assert got == want, f"{case}: the canary must say {want!r}, got {got!r}"
    if want in ("prefill_error", "no_kv_transfer_params"):
        assert d.requests == [], f"{case}: nothing can be handed off, decode must not be called"


class BusyPrefill(FakePrefill):
    """While it computes the canary's prompt, decode serves another client's short request by itself
    (its local_compute counter moves): what prefill does is none of decode's counters' business."""

    decode_url = None

    async def _answer(self, request, body, seen):
        other = {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 1, "stream": False}
        async with aiohttp.ClientSession() as session:
            async with session.post(self.decode_url + "/v1/completions", json=other) as resp:
                await resp.read()
        return await super()._answer(request, body, seen)


def test_canary_reads_decodes_counters_around_the_decode_hop_only(impl):
    """The docstring's window: decode's /metrics just before the decode hop and just after it. Decode
    serving someone else while prefill computes is outside that window; read before the prefill hop,
    that request's locally computed tokens would pass for the canary's."""

    async def scenario():
        async with BusyPrefill() as p, FakeDecode(prefills=[p]) as d:
            p.decode_url = d.url
            got = await asyncio.to_thread(
                impl.canary, p.url, d.url, "tiny", list(range(100, 164)), "canary-3"
            )
            return got, d

    got, d = run(scenario())
    assert len(d.requests) == 2, [r.request_id for r in d.requests]
    assert got == "kv_moved", (
        f"another request ran on decode while prefill computed, before the canary's decode hop: the canary's "
        f"own window saw only its handoff, want 'kv_moved', got {got!r}")  # fmt: skip


def test_canary_sends_prefill_what_prefill_request_makes(impl):
    """The docstring's prefill hop is ``prefill_request(body, request_id)`` of the canary's body (task 3's
    one-token, non-streaming request), not the client body with prefill's params added."""
    got, d = _canary_with_prefill(impl)
    assert got[0] == "kv_moved", got
    body = {"model": "tiny", "prompt": list(range(100, 164)), "max_tokens": 2, "temperature": 0.0}
    want_body, want_headers = impl.prefill_request(body, "canary-1")
    (seen,) = got[1].requests
    assert seen.body == want_body and seen.request_id == want_headers["X-Request-Id"], (
        f"prefill must receive prefill_request(body, request_id): want {want_body}, got {seen.body}")  # fmt: skip


def _canary_with_prefill(impl) -> tuple[tuple[str, FakePrefill], FakeDecode]:
    async def scenario():
        async with FakePrefill() as p, FakeDecode(prefills=[p]) as d:
            got = await asyncio.to_thread(
                impl.canary, p.url, d.url, "tiny", list(range(100, 164)), "canary-1"
            )
            return (got, p), d

    return run(scenario())


class RestartingDecode(FakeDecode):
    """Decode's process restarts while it answers the canary: its counters start again from 0."""

    async def _answer(self, request, body, seen):
        resp = await super()._answer(request, body, seen)
        self.counters = DecodeCounters(self.connector)
        return resp


def test_canary_says_decode_error_when_decode_restarted_during_the_hop(impl):
    """The docstring: nothing is raised for a broken pair; counters that do not compare (kv_verdict's
    ValueError) are decode's problem, ``"decode_error"``."""

    async def scenario():
        async with FakePrefill() as p, RestartingDecode(prefills=[p]) as d:
            d.counters.by_source["local_compute"] = 500.0  # decode served others before the canary
            return await asyncio.to_thread(
                impl.canary, p.url, d.url, "tiny", list(range(100, 164)), "canary-4"
            )

    got = run(scenario())
    assert got == "decode_error", (
        f"decode restarted between its two /metrics reads: want 'decode_error', got {got!r}"
    )


def test_canary_when_decode_is_down(impl):
    async def scenario():
        async with FakePrefill() as p, FakeDecode(prefills=[p]) as d:
            await d.stop()
            return await asyncio.to_thread(impl.canary, p.url, d.url, "tiny", [5, 6, 7], "canary-2")

    assert run(scenario()) == "decode_error"

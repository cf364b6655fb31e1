"""lab-02 task 4, the edges: arguments, the request id on every hop, what decode may receive in each mode,
and prefill answers that look like a handoff but are not.

Real HTTP on 127.0.0.1 through the given proxy, as in test_lab.py (``pdpair.testing.harness``).
"""

from __future__ import annotations

import asyncio
import copy

import aiohttp
import pytest
from aiohttp import web

from pdpair.proxy import Metrics, ProxyConfig, ProxyContext, Relay
from pdpair.testing.fakes import FakeDecode, FakePrefill
from pdpair.testing.harness import assert_complete, completion, pd_stack, run

HOSTILE = {"do_remote_prefill": True, "remote_host": "203.0.113.9", "remote_port": 1,
           "remote_engine_id": "evil", "remote_block_ids": [0], "remote_request_id": "x"}  # fmt: skip


def ids(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


# -------------------------------------------------------------------------------------------- arguments


@pytest.mark.lab02_task4
@pytest.mark.parametrize("prefill_urls", [["http://p"], []], ids=["with-prefill", "decode-alone"])
@pytest.mark.parametrize(
    ("decode_urls", "threshold"),
    [([], 0), ((), 0), (["http://d"], -1), (["http://d"], True), (["http://d"], 2.5), (["http://d"], "4")],
    ids=["no-decode-list", "no-decode-tuple", "negative", "bool", "float", "string"],
)
def test_policy_rejects_bad_arguments(impl, prefill_urls, decode_urls, threshold):
    """Bad arguments are refused whatever the pools: a policy over decode alone today gets prefills later."""
    with pytest.raises(ValueError):  # any wording: the docstring promises none
        impl.PDProxyPolicy(prefill_urls, decode_urls, local_prefill_max_tokens=threshold)


@pytest.mark.lab02_task4
def test_policy_accepts_the_edges(impl):
    solo = impl.PDProxyPolicy([], ["http://d"])
    assert solo.choose_prefill() is None and solo.choose_decode() == "http://d", (
        "an empty prefill pool is allowed"
    )
    off = impl.PDProxyPolicy(("http://p",), ("http://d",), local_prefill_max_tokens=0)
    assert off.prefill_remotely({"prompt": ids(1)}) is True, "threshold 0 switches the conditional rule off"


@pytest.mark.lab02_task4
def test_policy_keeps_its_own_copies_of_the_pools(impl):
    prefills, decodes = ["http://p1", "http://p0"], ["http://d1", "http://d0"]
    policy = impl.PDProxyPolicy(prefills, decodes)
    assert (prefills, decodes) == (["http://p1", "http://p0"], ["http://d1", "http://d0"]), (
        f"the caller's lists must not be modified (sorted, deduplicated...), got {prefills}, {decodes}")  # fmt: skip
    prefills.append("http://late")
    decodes.clear()
    got = [policy.choose_decode() for _ in range(3)], [policy.choose_prefill() for _ in range(3)]
    want = ["http://d1", "http://d0", "http://d1"], ["http://p1", "http://p0", "http://p1"]
    assert got == want, (
        "the policy keeps copies: later changes to the caller's lists must not change its rotation; "
        f"want {want}, got {got}")  # fmt: skip


@pytest.mark.lab02_task4
def test_what_counts_as_a_token_id_prompt(impl):
    """The docstring: ``[]`` is a token-id list (of length 0: short); a list holding a bool or a float is not
    one, and goes remote like a text prompt."""
    policy = impl.PDProxyPolicy(["http://p"], ["http://d"], local_prefill_max_tokens=4)
    got = [policy.prefill_remotely({"prompt": p}) for p in ([], [1, True], [1, 2.0], [True])]
    assert got == [False, True, True, True], (
        f"prompts [], [1, True], [1, 2.0], [True] with threshold 4: want local, remote, remote, remote "
        f"(True = remote), got {got}")  # fmt: skip


# ------------------------------------------------------------------------ request ids and client fields


DIRECT = {  # mode -> (prefill pool given, prefill behaviour, prompt length, want mode, want prefill_url given)
    "disaggregated": (True, "ok", 9, "disaggregated", True),
    "local": (True, "ok", 3, "local", False),
    "fallback": (True, "error500", 9, "fallback", True),
    "no_prefill": (False, "ok", 9, "fallback", False),
}


@pytest.mark.lab02_task4
@pytest.mark.parametrize("case", list(DIRECT))
def test_handle_leaves_the_callers_body_alone_and_names_its_prefill(impl, case):
    """``handle`` called directly (through the plumbing's ``ProxyContext``, over fakes): the caller's body,
    client-set ``kv_transfer_params`` included, is the same after as before, in every mode; and
    ``Relay.prefill_url`` is the prefill chosen (None when none was)."""
    with_prefill, behaviour, length, want_mode, want_url = DIRECT[case]

    async def scenario():
        async with FakePrefill(behaviour=behaviour) as p, FakeDecode(prefills=[p]) as d:
            policy = impl.PDProxyPolicy([p.url] if with_prefill else [], [d.url], local_prefill_max_tokens=4)
            body = _hostile({"model": "tiny", "prompt": ids(length), "max_tokens": 3, "stream": True,
                             "vllm_xargs": {"kv_transfer_params": copy.deepcopy(HOSTILE)}})  # fmt: skip
            sent = copy.deepcopy(body)
            async with aiohttp.ClientSession() as session:
                reply = await policy.handle(ProxyContext(session, ProxyConfig(), Metrics()), "/v1/completions",
                                            body, "direct-1")  # fmt: skip
                assert isinstance(reply, Relay), f"{case}: want a Relay, got {reply!r}"
                reply.stream.response.close()
            assert body == sent, (
                f"{case}: handle must not modify the caller's body:\n sent {sent}\n now  {body}"
            )
            got = (reply.mode, reply.prefill_url)
            want = (want_mode, p.url if want_url else None)
            assert got == want, f"{case}: want Relay mode / prefill_url {want}, got {got}"

    run(scenario())


def _hostile(body: dict) -> dict:
    return body | {"kv_transfer_params": copy.deepcopy(HOSTILE), "ec_transfer_params": {"x": 1}}


@pytest.mark.lab02_task4
@pytest.mark.parametrize("mode", ["disaggregated", "local", "fallback"])
def test_every_decode_hop_carries_the_request_id_and_no_client_internals(impl, mode):
    """A client's kv_transfer_params never reach decode (nor prefill except as the transform sets them), in
    every mode; and every decode hop carries the request's upstream id."""

    async def scenario():
        prefill_kw = {"behaviour": "error500"} if mode == "fallback" else {}
        async with pd_stack(impl, prefill_kw=prefill_kw, policy_kw={"local_prefill_max_tokens": 4}) as s:
            prompt = ids(3) if mode == "local" else ids(9)
            body = _hostile({"model": "tiny", "prompt": prompt, "max_tokens": 3, "stream": True})
            sent = copy.deepcopy(body)
            res = await s.call(body, headers={"X-Request-Id": "trace-1"})
            assert_complete(res, body, f"{mode} with client-set kv_transfer_params")
            assert res.headers.get("X-PD-Mode") == mode, res.headers
            (d,) = s.decodes[0].requests
            assert "ec_transfer_params" not in d.body, f"{mode}: ec_transfer_params reached decode: {d.body}"
            if mode == "disaggregated":
                assert d.kv_transfer_params in s.prefills[0].issued.values(), (
                    f"decode must get prefill's params, not the client's, got {d.kv_transfer_params}")  # fmt: skip
                (p,) = s.prefills[0].requests
                assert p.body["kv_transfer_params"]["remote_host"] is None and "ec_transfer_params" not in p.body, (
                    f"prefill gets the transform's params only, got {p.body}")  # fmt: skip
            else:
                assert "kv_transfer_params" not in d.body, (
                    f"{mode}: decode serves alone, so it gets the client's body WITHOUT the client's "
                    f"kv_transfer_params (a client must never steer NIXL); decode got {d.body}")  # fmt: skip
            upstream_id = res.headers.get("X-PD-Upstream-Request-Id")
            assert d.request_id and d.request_id == upstream_id, (
                f"{mode}: the decode hop carries X-Request-Id = the request id the proxy gave the policy "
                f"({upstream_id!r}), got {d.request_id!r}")  # fmt: skip
            assert body == sent, "the client's body must not be modified"

    run(scenario())


@pytest.mark.lab02_task4
def test_two_clients_with_one_request_id_at_once_both_complete(impl):
    async def scenario():
        async with pd_stack(impl, prefill_kw={"delay_s": 0.2}, decode_kw={"require_kv_params": True}) as s:
            bodies = [completion("twin-a", n=4), completion("twin-b", n=4)]
            results = await asyncio.gather(*(s.call(b, headers={"X-Request-Id": "same"}) for b in bodies))
            for body, res in zip(bodies, results, strict=True):
                assert_complete(res, body, f"{body['prompt']} (shares its X-Request-Id with the other)")
                assert res.headers.get("X-Request-Id") == "same", res.headers
            by_prompt = {r.body["prompt"]: r.request_id for r in s.prefills[0].requests}
            for d in s.decodes[0].requests:
                assert d.request_id == by_prompt[d.body["prompt"]], (
                    f"each request's two hops carry one id: prefill {by_prompt}, decode {d.request_id!r}")  # fmt: skip
            assert len(set(by_prompt.values())) == 2, (
                f"the two requests need distinct upstream ids, got {by_prompt}"
            )

    run(scenario())


# ------------------------------------------------------------------- answers that look like a handoff


class OddPrefill(FakePrefill):
    """A prefill whose answer carries ``params`` (a class attribute) as its kv_transfer_params."""

    params: object = None

    async def _answer(self, request, body, seen):
        params = body.get("kv_transfer_params") if self.params == "echo" else copy.deepcopy(self.params)
        answer = {"id": "cmpl-odd", "object": "text_completion", "model": "fake",
                  "choices": [{"index": 0, "text": "x", "finish_reason": "length"}], "kv_transfer_params": params}  # fmt: skip
        return web.json_response(answer)


UNUSABLE = {
    "empty": ({}, "no_kv_transfer_params"),
    "not_prefilled": ({"do_remote_prefill": False}, "bad_kv_transfer_params"),
    "request_params_echoed": ("echo", "bad_kv_transfer_params"),
    "port_as_string": ({"do_remote_prefill": True, "remote_engine_id": "e", "remote_block_ids": [1],
                        "remote_request_id": "r", "remote_host": "127.0.0.1", "remote_port": "5600"},
                       "bad_kv_transfer_params"),
}  # fmt: skip


@pytest.mark.lab02_task4
@pytest.mark.parametrize("case", list(UNUSABLE))
def test_an_unusable_prefill_answer_is_a_counted_fallback_not_a_handoff(impl, case):
    params, reason = UNUSABLE[case]
    odd = type(f"OddPrefill_{case}", (OddPrefill,), {"params": params})

    async def scenario():
        async with pd_stack(impl, prefill_cls=odd) as s:
            body = completion(f"odd-{case}", n=3)
            res = await s.call(body)
            assert_complete(res, body, f"prefill answered kv_transfer_params {params!r}")
            got = (res.headers.get("X-PD-Mode"), res.headers.get("X-PD-Fallback-Reason"))
            assert got == ("fallback", reason), (
                f"no KV can move with kv_transfer_params {params!r}: decode prefills again, so this is a "
                f"fallback named {reason!r}, never 'disaggregated'; got X-PD-Mode/Reason {got}")  # fmt: skip
            (d,) = s.decodes[0].requests
            assert "kv_transfer_params" not in d.body, f"decode must not get unusable params, got {d.body}"
            counts = [
                await s.metric("pdproxy_handoffs_total"),
                await s.metric("pdproxy_fallbacks_total", reason=reason),
            ]
            assert counts == [0, 1], f"handoffs / fallbacks({reason}) must be 0 / 1, got {counts}"

    run(scenario())


class FirstRefusedPrefill(FakePrefill):
    """Answers the first request 404 with vLLM's JSON error (the served model name differs), then normally."""

    refusal = {"error": {"message": "The model `tiny` does not exist.", "type": "NotFoundError", "param": "model",
                         "code": 404}}  # fmt: skip

    async def _answer(self, request, body, seen):
        if len(self.requests) == 1:
            return web.json_response(self.refusal, status=404)
        return await super()._answer(request, body, seen)


@pytest.mark.lab02_task4
def test_prefills_client_error_reaches_the_client_as_sent(impl):
    async def scenario():
        async with pd_stack(impl, prefill_cls=FirstRefusedPrefill) as s:
            res = await s.call(completion("nomodel"))
            assert (res.status, res.body) == (404, FirstRefusedPrefill.refusal), (
                f"prefill's 404 and its JSON body are the client's answer, unchanged; got {res.status} {res.body}"
            )

    run(scenario())


@pytest.mark.lab02_task4
def test_the_decode_turn_is_taken_before_the_prefill_hop(impl):
    """The docstring's step 1 picks both upstreams before any hop: a request refused by prefill has still
    taken decode 0's turn, so the next request goes to decode 1."""

    async def scenario():
        async with pd_stack(impl, n_decode=2, prefill_cls=FirstRefusedPrefill) as s:
            first = await s.call(completion("refused", n=3))
            assert first.status == 404, first.status
            body = completion("served", n=3)
            second = await s.call(body)
            assert_complete(second, body, "the request after a refused one")
            got = [len(d.requests) for d in s.decodes]
            assert got == [0, 1], (
                f"request 1 took decode 0's turn (step 1), so request 2 goes to decode 1: want hops per decode "
                f"[0, 1], got {got}")  # fmt: skip

    run(scenario())


class TextErrorPrefill(FakePrefill):
    async def _answer(self, request, body, seen):
        return web.Response(status=404, text="no such model", content_type="text/plain")


@pytest.mark.lab02_task4
def test_a_client_error_without_a_json_body_still_gets_an_error_object(impl):
    async def scenario():
        async with pd_stack(impl, prefill_cls=TextErrorPrefill) as s:
            res = await s.call(completion("nomodel"))
            assert res.status == 404, (
                f"prefill's 404 is the client's error: pass the status on, got {res.status}"
            )
            err = res.body.get("error") if isinstance(res.body, dict) else None
            assert isinstance(err, dict) and err.get("message"), (
                f"prefill sent no JSON error: the client still gets an OpenAI-style {{'error': {{...}}}}, got "
                f"{res.body!r}")  # fmt: skip
            assert s.decodes[0].requests == [], "decode must not be called for a request prefill rejected"

    run(scenario())

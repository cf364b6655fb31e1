"""lab-02 task 4: failures after prefill's answer, cancellation at every await, and the local reason.

Real HTTP on 127.0.0.1 through the given proxy (``pdpair.testing.harness``). The fake decode reacts to
``kv_transfer_params`` as vLLM 0.32's does (``pdpair.testing.fakes``): a KV load that fails under
policy ``fail`` is a 500 (JSON) or a 200 whose stream carries an error event (SSE); the fake prefill
holds a prompt's blocks until a decode reads them or aborts the request after receiving it.
"""

from __future__ import annotations

import asyncio

import pytest

from pdpair.testing.fakes import FakeDecode, FakePrefill
from pdpair.testing.harness import assert_complete, completion, pd_stack, run

pytestmark = pytest.mark.lab02_task4


def ids(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


async def until(predicate, what: str, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class ForgetfulPrefill(FakePrefill):
    """Answers with good-looking params it then forgets: decode's KV load fails (prefill died, say)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.issued = _Forget()


class _Forget(dict):
    def __setitem__(self, key, value):
        pass


# ----------------------------------------------------------------------- failures after the answer


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_failed_kv_load_is_never_retried_on_decode_alone(impl, stream):
    """After a handoff decode failed to load the KV: the client sees that failure. A second decode hop
    without the params would answer 200 with the right tokens and hide a broken pair."""

    async def scenario():
        async with pd_stack(impl, prefill_cls=ForgetfulPrefill) as s:
            body = completion("kvfail", n=4, stream=stream)
            res = await s.call(body)
            # Nothing may follow in the background either (a "release" after a failed load is a second
            # decode hop too): a later request's whole handoff gives any task this request left time to
            # reach decode, and it would then stand between the two in decode's log.
            s.prefills[0].issued = {}  # prefill remembers again: the next handoff works
            after = completion("after-kvfail", n=2)
            assert_complete(await s.call(after), after, "the next request")
            hops = [(r.body.get("prompt"), r.kv_transfer_params is not None) for r in s.decodes[0].requests]
            assert hops == [("kvfail", True), ("after-kvfail", True)], (
                f"decode's hops (prompt, with params): exactly one for the failed request, then the next request's; got {hops}")  # fmt: skip
            if stream:  # vLLM 0.32 streams: 200, an error event, [DONE]
                assert res.status == 200 and res.error is not None and res.texts == [], (
                    f"decode's error event must reach the client as it came, got {res.status} {res.error} {res.texts}")  # fmt: skip
                kinds = await s.metric("pdproxy_upstream_errors_total", role="decode", kind="error_event")
                assert kinds == 1, f"an error inside a 200 stream is counted: error_event {kinds}"
            else:
                assert res.status == 503, (
                    f"decode answered 500 after a handoff: the client gets 503, got {res.status}"
                )
                err = res.body["error"]
                want = {"type": "decode_unavailable", "upstream": s.decodes[0].url, "kind": "http_error"}
                assert {k: err.get(k) for k in want} == want, (
                    f"the 503's error object, want {want} in it: {err}"
                )
            assert await s.metric("pdproxy_fallbacks_total") == 0, "no fallback after prefill answered"

    run(scenario())


@pytest.mark.parametrize("mode", ["disaggregated", "local", "fallback"])
def test_decodes_client_errors_pass_through_unchanged(impl, mode):
    """Decode's 4xx (a prompt longer than its max_model_len, say) is the client's error, in every mode."""

    async def scenario():
        prefill_kw = {"behaviour": "error500"} if mode == "fallback" else {}
        async with pd_stack(impl, prefill_kw=prefill_kw, decode_kw={"behaviour": "error400"},
                            policy_kw={"local_prefill_max_tokens": 4}) as s:  # fmt: skip
            body = completion("too-long", n=3) | {"prompt": ids(3) if mode == "local" else ids(9)}
            res = await s.call(body)
            assert res.status == 400, (
                f"{mode}: decode's 400 must reach the client as a 400, got {res.status} {res.body}"
            )
            assert "injected 400" in str(res.body), f"{mode}: decode's own error body, got {res.body}"
            assert res.headers.get("X-PD-Mode") == mode, res.headers
            assert len(s.decodes[0].requests) == 1, "one decode hop"

    run(scenario())


@pytest.mark.parametrize("mode", ["local", "fallback", "no_prefill"])
def test_decode_failing_when_it_serves_alone_is_a_503_naming_it(impl, mode):
    async def scenario():
        n_prefill = 0 if mode == "no_prefill" else 1
        prefill_kw = {"behaviour": "error500"} if mode == "fallback" else {}
        async with pd_stack(impl, n_prefill=n_prefill, prefill_kw=prefill_kw, decode_kw={"behaviour": "error500"},
                            policy_kw={"local_prefill_max_tokens": 4}) as s:  # fmt: skip
            body = completion("down", n=3) | {"prompt": ids(3) if mode == "local" else ids(9)}
            res = await s.call(body)
            err = (res.body or {}).get("error") if isinstance(res.body, dict) else None
            assert res.status == 503 and err and err.get("type") == "decode_unavailable", (
                f"{mode}: decode answered 500 and nothing else can serve: 503 typed decode_unavailable, got "
                f"{res.status} {res.body}")  # fmt: skip
            assert (err.get("upstream"), err.get("kind")) == (s.decodes[0].url, "http_error"), (
                f"the 503 names decode and how it failed (its UpstreamError's kind): {err}")  # fmt: skip

    run(scenario())


# ------------------------------------------------------------------------------------- cancellation


SLOW_PREFILL = {"delay_s": 0.5}


async def _leave(s, body, when) -> None:
    """Send ``body`` and close the client's connection once ``when()`` holds."""
    task = asyncio.create_task(s.call(body))
    await until(when, "the moment to leave")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_client_leaving_mid_prefill_leaves_the_in_flight_count(impl):
    async def scenario():
        async with pd_stack(impl, prefill_kw=SLOW_PREFILL, policy_kw={"max_prefill_inflight": 1}) as s:
            policy = s.proxy.policy
            await _leave(s, completion("leaver", n=3), lambda: len(s.prefills[0].requests) == 1)
            await until(
                lambda: s.prefills[0].requests[0].outcome == "cancelled", "prefill to see the hop cancelled"
            )
            await until(lambda: not policy.prefill_busy(), "the cancelled hop to leave the count", 2.0)
            s.prefills[0].delay_s = 0
            body = completion("next", n=3)
            res = await s.call(body)
            assert_complete(res, body, "the request after a client left mid-prefill")
            assert res.headers.get("X-PD-Mode") == "disaggregated", (
                "the hop cancelled with its client is no longer in flight: prefill is not busy, got "
                f"{res.headers.get('X-PD-Mode')}")  # fmt: skip

    run(scenario())


def test_a_client_leaving_at_the_decode_hop_leaves_the_count_too(impl):
    async def scenario():
        async with pd_stack(
            impl, decode_kw={"admit_delay_s": 1.0}, policy_kw={"max_prefill_inflight": 1}
        ) as s:
            await _leave(s, completion("leaver", n=3), lambda: len(s.decodes[0].requests) >= 1)
            assert not s.proxy.policy.prefill_busy(), (
                "prefill had answered: nothing of this request is in flight"
            )

    run(scenario())


def test_each_policy_counts_its_own_hops(impl):
    async def scenario():
        async with pd_stack(impl, prefill_kw=SLOW_PREFILL, policy_kw={"max_prefill_inflight": 1}) as s:
            other = impl.PDProxyPolicy(
                [p.url for p in s.prefills], [d.url for d in s.decodes], max_prefill_inflight=1
            )
            task = asyncio.create_task(s.call(completion("busy", n=2)))
            await until(lambda: len(s.prefills[0].requests) == 1, "the hop to start")
            assert s.proxy.policy.prefill_busy() is True, "this policy has its one hop in flight"
            assert other.prefill_busy() is False, (
                "another policy (another proxy) has nothing in flight: the count belongs to the instance")  # fmt: skip
            await task

    run(scenario())


def test_a_client_leaving_after_prefill_answered_frees_prefills_blocks(impl):
    """Prefill answered, so it holds the prompt's blocks; the client leaves before the decode hop reached
    decode (decode admits a request 1 s after it arrives). Without a release prefill would hold
    them for its whole lease (30 s here)."""

    async def scenario():
        async with pd_stack(impl, decode_kw={"admit_delay_s": 1.0}) as s:
            prefill, decode = s.prefills[0], s.decodes[0]
            body = completion("gone", n=50, stream=True)
            await _leave(s, body, lambda: len(decode.requests) >= 1)
            assert len(prefill.held_requests()) == 1, "prefill answered: it holds the blocks"
            await until(lambda: not prefill.held_requests(), "prefill's blocks to be released", 5.0)
            release = decode.requests[-1]
            assert release.kv_transfer_params in prefill.issued.values(), (
                f"the release carries prefill's params, got {release.kv_transfer_params}")  # fmt: skip
            rb = release.body
            assert (rb.get("max_tokens"), rb.get("stream")) == (1, False), (
                f"the release asks decode for one token, not streamed: got max_tokens {rb.get('max_tokens')}, "
                f"stream {rb.get('stream')}")  # fmt: skip
            first = decode.requests[0]
            assert release.request_id == f"{first.request_id}-release", (
                f"the release hop has its own id, the request's plus '-release': {first.request_id!r} -> "
                f"{release.request_id!r}")  # fmt: skip
            # handle ended with the CancelledError (re-raised): the plumbing counts a disconnect, exactly as
            # for a client that leaves during the relay (test_lab.py's client-disconnect drill)
            await until(lambda: s.proxy.metrics.value("pdproxy_client_disconnects_total") >= 1,
                        "the disconnect to be counted (handle must re-raise CancelledError, not answer)")  # fmt: skip
            assert s.proxy.metrics.value("pdproxy_client_disconnects_total") == 1

    run(scenario())


class GatedDecode(FakeDecode):
    """Holds every release hop (its id ends in ``-release``) until the test opens ``gate``."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gate = asyncio.Event()

    async def _answer(self, request, body, seen):
        if (seen.request_id or "").endswith("-release"):
            await self.gate.wait()
        return await super()._answer(request, body, seen)


def test_the_release_runs_on_its_own_and_handle_re_raises_at_once(impl):
    """The release is a background task, not awaited by the cancelled handler: ``handle`` ends with the
    CancelledError (the plumbing counts the disconnect) while decode still holds the release; the release
    then completes on its own. A handler that waited for it would linger as long as decode takes, and a
    second cancellation (the server shutting down) would cancel the release with it."""

    async def scenario():
        async with pd_stack(impl, decode_kw={"admit_delay_s": 1.0}, decode_cls=GatedDecode) as s:
            prefill, decode = s.prefills[0], s.decodes[0]
            await _leave(s, completion("gone", n=50, stream=True), lambda: len(decode.requests) >= 1)
            await until(lambda: len(decode.requests) == 2, "the release hop to reach decode")
            await until(lambda: s.proxy.metrics.value("pdproxy_client_disconnects_total") >= 1,
                        "handle to re-raise while decode still holds the release (do not await the release)")  # fmt: skip
            held = decode.requests[1].outcome
            decode.gate.set()
            assert held == "pending", f"the disconnect was counted only after the release ended ({held})"
            await until(lambda: not prefill.held_requests(), "the released blocks to be freed")

    run(scenario())


def test_no_release_without_an_answer(impl):
    async def scenario():
        async with pd_stack(impl, prefill_kw=SLOW_PREFILL) as s:
            await _leave(s, completion("early", n=3), lambda: len(s.prefills[0].requests) == 1)
            await asyncio.sleep(0.7)
            assert s.decodes[0].requests == [], (
                "the client left before prefill answered: prefill aborts the request and frees its blocks "
                "itself; decode must not be called")  # fmt: skip
            assert s.prefills[0].held_requests() == []

    run(scenario())


# ------------------------------------------------------------------------------ the local reason


def test_the_local_reason_is_observable_and_busy_comes_first(impl):
    async def scenario():
        policy_kw = {"local_prefill_max_tokens": 4, "max_prefill_inflight": 1}
        async with pd_stack(impl, prefill_kw=SLOW_PREFILL, policy_kw=policy_kw) as s:
            short = completion("s1", n=2) | {"prompt": ids(3)}
            res = await s.call(short)
            assert (res.headers.get("X-PD-Mode"), res.headers.get("X-PD-Local-Reason")) == ("local", "short_prompt"), (
                res.headers)  # fmt: skip
            hop = asyncio.create_task(s.call(completion("long", n=2) | {"prompt": ids(9)}))
            await until(lambda: len(s.prefills[0].requests) == 1, "a prefill hop in flight")
            busy_short = await s.call(completion("s2", n=2) | {"prompt": ids(3, 500)})
            busy_long = await s.call(completion("l2", n=2) | {"prompt": ids(9, 600)})
            await hop
            got = [r.headers.get("X-PD-Local-Reason") for r in (busy_short, busy_long)]
            assert got == ["prefill_busy", "prefill_busy"], (
                f"while prefill is busy every local prompt says prefill_busy (checked first), short ones too; got {got}")  # fmt: skip
            counts = [
                await s.metric("pdproxy_local_prefills_total", reason=r)
                for r in ("short_prompt", "prefill_busy")
            ]
            assert counts == [1, 2], (
                f"pdproxy_local_prefills_total by reason short_prompt / prefill_busy: {counts}"
            )

    run(scenario())

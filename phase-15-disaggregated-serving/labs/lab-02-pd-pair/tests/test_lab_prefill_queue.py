"""lab-02 task 4, the prefill-queue limit: ``max_prefill_inflight`` and ``prefill_busy``.

Dynamo's conditional rule sends a prompt to prefill only while the prefill queue is shorter than a limit
(an early ai-dynamo/dynamo ``examples/llm/components/disagg_router.py``; in 1.6.1 the router's
``prefill_busy_threshold``); the proxy's queue is the prefill hops
it has in flight. Real HTTP on 127.0.0.1 through the given proxy, slow fake prefills holding hops open.
"""

from __future__ import annotations

import asyncio

import pytest

from pdpair.testing.harness import assert_complete, completion, pd_stack, run

pytestmark = pytest.mark.lab02_task4

SLOW = {"delay_s": 0.6}  # a prefill hop stays open this long: long enough to send others meanwhile


def ids(n: int, start: int = 100) -> list[int]:
    return list(range(start, start + n))


def tokens(tag: str, n: int, length: int = 9) -> dict:
    """A token-id prompt of ``length`` tokens (the threshold below is 4: 9 is long, 3 is short)."""
    return completion(tag, n=n) | {"prompt": ids(length, start=100 + 50 * len(tag))}


async def until(predicate, what: str, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def modes(results) -> list[str | None]:
    return [r.headers.get("X-PD-Mode") for r in results]


@pytest.mark.parametrize(
    "limit", [0, -1, True, 1.5, "2"], ids=["zero", "negative", "bool", "float", "string"]
)
def test_limit_rejects_bad_values(impl, limit):
    for prefills in (["http://p"], []):  # checked whatever the pools
        with pytest.raises(ValueError):  # any wording
            impl.PDProxyPolicy(prefills, ["http://d"], max_prefill_inflight=limit)


def test_no_limit_is_todays_behaviour_and_a_limit_starts_idle(impl):
    for limit in (None, 1):
        policy = impl.PDProxyPolicy(
            ["http://p"], ["http://d"], local_prefill_max_tokens=4, max_prefill_inflight=limit
        )
        assert policy.prefill_busy() is False, f"limit {limit}: nothing is in flight yet, prefill is not busy"
        assert policy.prefill_remotely({"prompt": ids(9)}) is True, (
            f"limit {limit}: a long prompt goes remote"
        )
        assert policy.prefill_remotely({"prompt": ids(4)}) is False, f"limit {limit}: a short one stays local"


def test_busy_at_the_limit_not_below_and_idle_again_after(impl):
    """Limit 2: one hop in flight -> not busy, a long prompt goes remote; two -> busy, the next one is
    prefilled on decode; once both hops are answered prefill takes requests again."""

    async def scenario():
        async with pd_stack(impl, prefill_kw=SLOW, policy_kw={"local_prefill_max_tokens": 4, "max_prefill_inflight": 2}) as s:  # fmt: skip
            policy, prefill = s.proxy.policy, s.prefills[0]
            a = asyncio.create_task(s.call(tokens("a", 3)))
            await until(lambda: len(prefill.requests) == 1, "prefill to receive the first request")
            assert policy.prefill_busy() is False, "1 hop in flight, limit 2: prefill is not busy (1 < 2)"
            b = asyncio.create_task(s.call(tokens("b", 3)))
            await until(lambda: len(prefill.requests) == 2, "prefill to receive the second request")
            assert policy.prefill_busy() is True, (
                "2 hops in flight, limit 2: prefill is busy (the limit itself)"
            )
            body_c = tokens("c", 3)
            c = await s.call(body_c)
            assert_complete(c, body_c, "a long prompt sent while prefill is busy")
            assert c.headers.get("X-PD-Mode") == "local", (
                f"2 hops in flight reach the limit 2: the long prompt is prefilled on decode (Dynamo's queue "
                f"rule), got X-PD-Mode {c.headers.get('X-PD-Mode')}")  # fmt: skip
            assert len(prefill.requests) == 2, "a request prefilled locally never reaches prefill"
            first = await asyncio.gather(a, b)
            assert modes(first) == ["disaggregated", "disaggregated"], modes(first)
            assert policy.prefill_busy() is False, "both hops answered: nothing is in flight any more"
            body_d = tokens("d", 3)
            d = await s.call(body_d)
            assert_complete(d, body_d, "a long prompt after prefill drained")
            assert d.headers.get("X-PD-Mode") == "disaggregated", (
                "prefill is idle again: the prompt goes remote"
            )

    run(scenario())


def test_limit_one_is_shared_by_every_request_of_the_policy(impl):
    """Limit 1: the count is the policy's, not the request's - a second request sees the first's hop."""

    async def scenario():
        async with pd_stack(impl, prefill_kw=SLOW, policy_kw={"max_prefill_inflight": 1}) as s:
            a = asyncio.create_task(s.call(completion("first", n=3)))
            await until(lambda: len(s.prefills[0].requests) == 1, "prefill to receive the first request")
            assert s.proxy.policy.prefill_remotely({"prompt": "hi"}) is False, (
                "prefill_remotely itself says local while prefill_busy() (its docstring), not only handle"
            )
            body = completion("second", n=3)
            second = await s.call(body)
            assert_complete(second, body, "a text prompt while the only allowed hop is in flight")
            assert second.headers.get("X-PD-Mode") == "local", (
                "limit 1 with one hop in flight: even a text prompt (always remote by length) is prefilled "
                f"on decode, got {second.headers.get('X-PD-Mode')}")  # fmt: skip
            assert modes([await a]) == ["disaggregated"]

    run(scenario())


def test_only_prefill_hops_count_not_local_requests_nor_decode_hops(impl):
    """Limit 1: a short prompt streaming from decode, or a handed-off request decoding after its prefill
    answered, holds no prefill hop - the next long prompt still goes remote."""

    async def scenario():
        slow_decode = {"ttft_s": 0.3, "itl_s": 0.05}
        policy_kw = {"local_prefill_max_tokens": 4, "max_prefill_inflight": 1}
        async with pd_stack(impl, decode_kw=slow_decode, policy_kw=policy_kw) as s:
            short = asyncio.create_task(s.call(tokens("short", 6, length=3)))
            await until(lambda: len(s.decodes[0].requests) == 1, "decode to receive the short prompt")
            assert s.proxy.policy.prefill_busy() is False, "a local request is no prefill hop"
            long_a = asyncio.create_task(s.call(tokens("la", 6)))
            await until(lambda: len(s.decodes[0].requests) == 2, "the first long prompt to reach decode")
            assert s.proxy.policy.prefill_busy() is False, (
                "prefill answered: the decode hop is no prefill hop"
            )
            long_b = await s.call(tokens("lb", 3))
            got = modes([await short, await long_a, long_b])
            assert got == ["local", "disaggregated", "disaggregated"], (
                f"only prefill hops count towards the limit: want local, disaggregated, disaggregated, got {got}"
            )

    run(scenario())


FAILURES = {  # prefill behaviour -> what the client gets (the hop ends either way)
    "error500": "fallback",
    "die": "fallback",
    "hang": "fallback",  # the proxy's prefill timeout ends it
    "error400": 400,  # the client's error, passed on
}


@pytest.mark.parametrize("behaviour", list(FAILURES))
def test_a_failed_prefill_hop_leaves_the_count(impl, behaviour):
    async def scenario():
        async with pd_stack(impl, prefill_kw={"behaviour": behaviour}, policy_kw={"max_prefill_inflight": 1},
                            prefill_timeout_s=0.3) as s:  # fmt: skip
            res = await s.call(completion("fails", n=3))
            want = FAILURES[behaviour]
            got = res.status if isinstance(want, int) else res.headers.get("X-PD-Mode")
            assert got == want, f"prefill {behaviour}: expected {want}, got {got} ({res.status})"
            assert s.proxy.policy.prefill_busy() is False, (
                f"the prefill hop failed ({behaviour}): it is no longer in flight, so with limit 1 prefill must not "
                "stay 'busy' for ever")  # fmt: skip
            s.prefills[0].behaviour, s.prefills[0].delay_s = "ok", SLOW["delay_s"]
            s.proxy.config.prefill_timeout_s = (
                30.0  # this hop is answered, never timed out, however slow the machine
            )
            body = completion("after", n=3)
            after = asyncio.create_task(s.call(body))
            await until(lambda: len(s.prefills[0].requests) == 2, "the next request's prefill hop")
            busy = s.proxy.policy.prefill_busy()
            after = await after
            assert busy is True, (
                f"after the failed hop ({behaviour}) the count is back to 0, not below: the next hop in flight "
                "reaches the limit 1 again, so prefill is busy (a hop counted out twice would leave room "
                "for one hop too many)")  # fmt: skip
            assert_complete(after, body, f"the request after a {behaviour} prefill")
            assert after.headers.get("X-PD-Mode") == "disaggregated", (
                f"after the failed hop ended, prefill is idle: the next prompt goes remote, got "
                f"{after.headers.get('X-PD-Mode')}")  # fmt: skip

    run(scenario())

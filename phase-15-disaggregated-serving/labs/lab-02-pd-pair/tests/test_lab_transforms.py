"""lab-02 task 3, the edges: what a client may not set, and when prefill's answer is really a handoff.

vLLM hands ``kv_transfer_params`` (and ``ec_transfer_params``) to its connectors: a client that sets
them steers NIXL (which host decode handshakes with, which blocks it pins). Only the proxy sets them.
And only an answer decode's connector would really pull from is a handoff; anything else means decode
prefills the prompt again, so it must be a counted fallback, never a silent "disaggregated".
"""

from __future__ import annotations

import copy

import pytest

HOSTILE = {"do_remote_prefill": True, "remote_host": "203.0.113.9", "remote_port": 1,
           "remote_engine_id": "evil", "remote_block_ids": [0], "remote_request_id": "x"}  # fmt: skip
CLIENT_BODY = {
    "model": "tiny", "prompt": [1, 2, 3], "max_tokens": 20, "stream": True, "temperature": 0.0,
    "kv_transfer_params": HOSTILE, "ec_transfer_params": {"do_remote_encode": True},
    "vllm_xargs": {"kv_transfer_params": "x", "my_plugin_knob": 3},
}  # fmt: skip
CLEAN = {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 20, "stream": True, "temperature": 0.0,
         "vllm_xargs": {"my_plugin_knob": 3}}  # fmt: skip
GOOD_PARAMS = {"do_remote_prefill": True, "do_remote_decode": False, "remote_engine_id": "e-1",
               "remote_block_ids": [[1, 2, 3]], "remote_request_id": "cmpl-r1-0-ab12cd34",
               "remote_host": "127.0.0.1", "remote_port": 54349, "tp_size": 1, "remote_num_tokens": 70,
               "transfer_mode": "pull"}  # fmt: skip
ECHOED = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
          "remote_block_ids": None, "remote_host": None, "remote_port": None}  # fmt: skip


def _answer(params=..., **extra) -> dict:
    answer = {"id": "cmpl-1", "choices": [{"index": 0, "text": "x", "finish_reason": "length"}]}
    if params is not ...:
        answer["kv_transfer_params"] = params
    return answer | extra


@pytest.mark.lab02_task3
def test_sanitize_request_drops_only_the_internal_fields(impl):
    body = copy.deepcopy(CLIENT_BODY)
    clean = impl.sanitize_request(body)
    assert clean == CLEAN, (
        "kv_transfer_params and ec_transfer_params (also inside vllm_xargs) are the proxy's to set; "
        f"everything else passes through.\n want {CLEAN}\n got  {clean}")  # fmt: skip
    assert body == CLIENT_BODY, "sanitize_request must not modify the client's body"
    clean["prompt"].append(4)
    clean["vllm_xargs"]["my_plugin_knob"] = 4
    assert body == CLIENT_BODY, "the sanitized body must be a deep copy: changing it changed the client's"
    plain = {"model": "m", "prompt": "hi", "max_tokens": 2}
    assert impl.sanitize_request(plain) == plain, "a body without internal fields comes back equal"


@pytest.mark.lab02_task3
def test_prefill_request_replaces_client_kv_params_with_its_own(impl):
    body = copy.deepcopy(CLIENT_BODY)
    new, headers = impl.prefill_request(body, "r-1")
    assert new["kv_transfer_params"] == ECHOED, (
        "the prefill hop carries exactly PREFILL_KV_TRANSFER_PARAMS, whatever the client sent there; got "
        f"{new['kv_transfer_params']}")  # fmt: skip
    assert "ec_transfer_params" not in new and new["vllm_xargs"] == {"my_plugin_knob": 3}, (
        f"internal fields from the client never reach prefill, got {new}")  # fmt: skip
    assert (new["max_tokens"], new["stream"]) == (1, False) and headers.get("X-Request-Id") == "r-1", new
    assert body == CLIENT_BODY, "the client's body must not be modified"


@pytest.mark.lab02_task3
def test_decode_request_carries_prefills_params_not_the_clients(impl):
    body = copy.deepcopy(CLIENT_BODY)
    answer = _answer(copy.deepcopy(GOOD_PARAMS))
    new = impl.decode_request(body, answer)
    assert new["kv_transfer_params"] == GOOD_PARAMS, (
        f"decode gets exactly the params prefill returned (nothing of the client's merged in), got "
        f"{new['kv_transfer_params']}")  # fmt: skip
    assert {k: v for k, v in new.items() if k != "kv_transfer_params"} == CLEAN, (
        f"decode gets the client's body without its internal fields, got {new}")  # fmt: skip
    assert body == CLIENT_BODY and answer["kv_transfer_params"] == GOOD_PARAMS, "inputs must not be modified"


GOOD_ANSWERS = {
    "grouped_block_ids": GOOD_PARAMS,  # vLLM 0.32: one list of block ids per KV-cache group
    "flat_block_ids": GOOD_PARAMS | {"remote_block_ids": [3, 4]},
    "extra_keys": GOOD_PARAMS | {"remote_blocks_expiry_time": None, "dcp_size": 1},
}
BAD_ANSWERS = {  # name -> (kv_transfer_params or ... for "absent", the reason)
    "absent": (..., "no_kv_transfer_params"),
    "null": (None, "no_kv_transfer_params"),
    "empty": ({}, "no_kv_transfer_params"),
    "do_remote_prefill_false": ({"do_remote_prefill": False}, "bad_kv_transfer_params"),
    "request_params_echoed": (ECHOED, "bad_kv_transfer_params"),
    "not_an_object": ("do_remote_prefill", "bad_kv_transfer_params"),
    "do_remote_prefill_string": (GOOD_PARAMS | {"do_remote_prefill": "false"}, "bad_kv_transfer_params"),
    "port_as_string": (GOOD_PARAMS | {"remote_port": "54349"}, "bad_kv_transfer_params"),
    "port_as_bool": (GOOD_PARAMS | {"remote_port": True}, "bad_kv_transfer_params"),
    "port_out_of_range": (GOOD_PARAMS | {"remote_port": 70000}, "bad_kv_transfer_params"),
    "port_zero": (GOOD_PARAMS | {"remote_port": 0}, "bad_kv_transfer_params"),
    "block_ids_as_bools": (GOOD_PARAMS | {"remote_block_ids": [True, False]}, "bad_kv_transfer_params"),
    "no_block_ids": (GOOD_PARAMS | {"remote_block_ids": []}, "bad_kv_transfer_params"),
    "empty_block_groups": (GOOD_PARAMS | {"remote_block_ids": [[]]}, "bad_kv_transfer_params"),
    "block_ids_as_string": (GOOD_PARAMS | {"remote_block_ids": "1,2,3"}, "bad_kv_transfer_params"),
    "no_engine_id": ({k: v for k, v in GOOD_PARAMS.items() if k != "remote_engine_id"}, "bad_kv_transfer_params"),
    # strings, not merely truthy values: vLLM's engine ids are strings (config/kv_transfer.py engine_id),
    # and decode's scheduler keeps the ids in dicts and sets (nixl/base_scheduler.py): a list is unhashable
    "engine_id_as_int": (GOOD_PARAMS | {"remote_engine_id": 7}, "bad_kv_transfer_params"),
    "request_id_as_list": (GOOD_PARAMS | {"remote_request_id": ["cmpl-r1"]}, "bad_kv_transfer_params"),
    "host_as_int": (GOOD_PARAMS | {"remote_host": 2130706433}, "bad_kv_transfer_params"),
    "host_null": (GOOD_PARAMS | {"remote_host": None}, "bad_kv_transfer_params"),
    "empty_request_id": (GOOD_PARAMS | {"remote_request_id": ""}, "bad_kv_transfer_params"),
}  # fmt: skip


@pytest.mark.lab02_task3
@pytest.mark.parametrize("case", list(GOOD_ANSWERS))
def test_a_usable_prefill_answer_is_a_handoff(impl, case):
    answer = _answer(copy.deepcopy(GOOD_ANSWERS[case]))
    got = impl.prefill_answer_problem(answer)
    assert got is None, f"{case}: decode's connector would pull from these params; got problem {got!r}"
    assert impl.decode_request({"prompt": "x"}, answer)["kv_transfer_params"] == GOOD_ANSWERS[case]


@pytest.mark.lab02_task3
@pytest.mark.parametrize("case", list(BAD_ANSWERS))
def test_an_unusable_prefill_answer_is_named_and_refused(impl, case):
    params, want = BAD_ANSWERS[case]
    answer = _answer(copy.deepcopy(params))
    got = impl.prefill_answer_problem(answer)
    assert got == want, (
        f"{case}: kv_transfer_params {params if params is not ... else '(absent)'!r} cannot move any KV: "
        f"the problem is {want!r}, got {got!r}")  # fmt: skip
    with pytest.raises(ValueError):
        impl.decode_request({"prompt": "x"}, answer)


@pytest.mark.lab02_task3
def test_an_answer_that_is_not_an_object_has_no_params(impl):
    for answer in (None, [GOOD_PARAMS], "kv_transfer_params"):
        got = impl.prefill_answer_problem(answer)
        assert got == "no_kv_transfer_params", f"answer {answer!r}: no kv_transfer_params object, got {got!r}"


# ------------------------------------------------------------------ what reaches decode, in every shape

FALSY = {"empty_object": {}, "null": None, "empty_string": "", "zero": 0, "false": False, "empty_list": []}


@pytest.mark.lab02_task3
@pytest.mark.parametrize("case", list(FALSY))
def test_sanitize_drops_internal_fields_whatever_their_value(impl, case):
    """A falsy kv_transfer_params smuggled in vllm_xargs kills vLLM 0.32's engine core (on_new_request
    calls .get on it): dropped, like every other value, at the top level and inside vllm_xargs."""
    value = FALSY[case]
    body = {"prompt": [1, 2], "kv_transfer_params": value, "ec_transfer_params": value,
            "vllm_xargs": {"kv_transfer_params": value, "ec_transfer_params": value, "knob": 1}}  # fmt: skip
    got = impl.sanitize_request(body)
    assert got == {"prompt": [1, 2], "vllm_xargs": {"knob": 1}}, (
        f"internal fields set to {value!r} must be dropped too, got {got}")  # fmt: skip


@pytest.mark.lab02_task3
@pytest.mark.parametrize("xargs", [["kv_transfer_params"], "kv_transfer_params", 7, None],
                         ids=["list", "string", "number", "null"])  # fmt: skip
def test_sanitize_keeps_a_vllm_xargs_that_is_not_an_object(impl, xargs):
    body = {"prompt": "hi", "vllm_xargs": xargs, "kv_transfer_params": {"do_remote_prefill": True}}
    got = impl.sanitize_request(body)
    assert got == {"prompt": "hi", "vllm_xargs": xargs}, (
        f"a vllm_xargs that is not an object is kept as sent (vLLM refuses it with a 400), got {got}")  # fmt: skip
    if isinstance(xargs, list):
        got["vllm_xargs"].append("x")
        assert body["vllm_xargs"] == ["kv_transfer_params"], "a deep copy: the client's list must not change"


@pytest.mark.lab02_task3
def test_sanitize_drops_chat_prompt_token_ids_with_the_params(impl):
    """On chat, vLLM 0.32 takes kv_transfer_params["prompt_token_ids"] INSTEAD of the messages
    (renderers/online_renderer.py _reused_prompt_token_ids): a client must not choose decode's prompt."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "kv_transfer_params": {"prompt_token_ids": [1, 2, 3]},
            "vllm_xargs": {"kv_transfer_params": [1, 2, 3]}}  # fmt: skip
    got = impl.sanitize_request(body)
    assert got == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "vllm_xargs": {},
    }, got


@pytest.mark.lab02_task3
def test_release_request_is_the_handoff_for_one_token(impl):
    body = {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 50, "max_completion_tokens": 50, "stream": True,
            "stream_options": {"include_usage": True}, "min_tokens": 5, "temperature": 0.0,
            "kv_transfer_params": HOSTILE}  # fmt: skip
    sent = copy.deepcopy(body)
    answer = _answer(copy.deepcopy(GOOD_PARAMS))
    got = impl.release_request(body, answer)
    want = {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 1, "max_completion_tokens": 1, "stream": False,
            "temperature": 0.0, "kv_transfer_params": GOOD_PARAMS}  # fmt: skip
    assert got == want, f"release_request:\n want {want}\n got  {got}"
    assert body == sent and answer["kv_transfer_params"] == GOOD_PARAMS, "inputs must not be modified"
    got["kv_transfer_params"]["remote_block_ids"][0].append(9)
    assert answer["kv_transfer_params"] == GOOD_PARAMS, "a deep copy of prefill's params"
    plain = impl.release_request({"prompt": "x", "max_tokens": 9}, _answer(copy.deepcopy(GOOD_PARAMS)))
    assert "max_completion_tokens" not in plain and plain["max_tokens"] == 1, plain
    with pytest.raises(ValueError):
        impl.release_request({"prompt": "x"}, _answer({"do_remote_prefill": False}))


EDGE_ANSWERS = {  # the bounds of a usable answer: (params, problem or None)
    "port_65535": (GOOD_PARAMS | {"remote_port": 65535}, None),
    "port_65536": (GOOD_PARAMS | {"remote_port": 65536}, "bad_kv_transfer_params"),
    "port_1": (GOOD_PARAMS | {"remote_port": 1}, None),
    "grouped_ids_with_a_bool": (GOOD_PARAMS | {"remote_block_ids": [[1, True]]}, "bad_kv_transfer_params"),
    "second_group_of_bools": (GOOD_PARAMS | {"remote_block_ids": [[1, 2], [False]]}, "bad_kv_transfer_params"),
    "one_empty_group_beside_ids": (GOOD_PARAMS | {"remote_block_ids": [[1, 2], []]}, None),
    "grouped_ids_as_strings": (GOOD_PARAMS | {"remote_block_ids": [["1"]]}, "bad_kv_transfer_params"),
}  # fmt: skip


@pytest.mark.lab02_task3
@pytest.mark.parametrize("case", list(EDGE_ANSWERS))
def test_prefill_answer_edges(impl, case):
    params, want = EDGE_ANSWERS[case]
    got = impl.prefill_answer_problem(_answer(copy.deepcopy(params)))
    assert got == want, f"{case}: want {want!r}, got {got!r}"

"""Every reply the contract allows is read, and every request it refuses is refused or mended locally.

The replies, stream chunks and requests here are generated from the contract's own schemas
(:mod:`tests.schema_variants` over :mod:`tests.contract`): each field in turn left out, null, an empty
list, each alternative. Reading one must give a completion, or a typed error that fails the task for
good (never a bare ``AttributeError`` or ``TypeError``, which Airflow would retry, paying again).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_o3.budget import Budget, Spend
from airflow_o3.errors import BadResponseError, CompletionError, InvalidRequestError
from airflow_o3.observability import record_completion, summary_line
from airflow_o3.operators.o3mini import reply_value
from airflow_o3.request import build_body
from airflow_o3.response import Completion, parse_response, usage_over
from airflow_o3.streaming import StreamAssembler
from tests.contract import (
    request_schema,
    response_schema,
    stream_chunk_schema,
    validate_request_body,
    validate_response_body,
    validate_stream_chunk,
)
from tests.schema_variants import example, variants

REPLIES = list(variants(response_schema()))
CHUNKS = list(variants(stream_chunk_schema()))
USER = [{"role": "user", "content": "Summarise the night's incidents."}]


def _ids(cases: list[tuple[str, Any]]) -> list[str]:
    return [label for label, _ in cases]


def _read(body: dict[str, Any]) -> Completion | None:
    """The completion, or None when the reply has no choice to read (a typed BadResponseError)."""
    try:
        return parse_response(200, {}, json.dumps(body).encode())
    except BadResponseError:
        assert body["choices"] == [], "only a reply without choices may be refused"
        return None


def _hand_downstream(completion: Completion) -> list[Any]:
    """What the operator does with each choice: its value, or a typed CompletionError."""
    values = []
    for choice in completion.choices:
        try:
            values.append(reply_value(choice, completion, None))
        except CompletionError as error:
            values.append(error)
    return values


def _count_and_report(completions: list[Completion]) -> dict[str, Any]:
    usage = usage_over(completions)
    json.dumps(usage, allow_nan=False)
    spend = Spend(Budget(max_total_tokens=10**9, max_cost_usd=1000.0))
    for completion in completions:
        spend.add(completion)
        summary_line(completion, latency=0.5, client_request_id=None)
        record_completion(completion, latency=0.5, tags={"model": "o3-mini"})
    spend.check()
    json.dumps(spend.record(), allow_nan=False)
    return usage


def test_the_generated_replies_are_the_contracts():
    assert len(REPLIES) > 100
    for _, body in REPLIES:
        validate_response_body(body)


@pytest.mark.parametrize(("label", "body"), REPLIES, ids=_ids(REPLIES))
def test_every_reply_the_contract_allows_is_read_and_handed_downstream(label, body):
    completion = _read(body)
    if completion is None:
        return
    values = _hand_downstream(completion)
    full = example(response_schema())
    _count_and_report([completion, _read(full)])
    _count_and_report([_read(full), completion])
    for choice, value, sent in zip(completion.choices, values, body["choices"], strict=True):
        calls = sent["message"].get("tool_calls") or []
        if isinstance(value, list):
            assert [call["name"] for call in value] == [
                call.get("function", call.get("custom", {}))["name"] for call in calls
            ]
        elif not isinstance(value, CompletionError):
            assert value == sent["message"]["content"] == choice.text


@pytest.mark.parametrize(
    ("first", "second"),
    [(None, {"reasoning_tokens": 64}), ({"reasoning_tokens": 64}, None), (None, None)],
)
def test_usage_adds_up_when_some_replies_have_null_details(first, second):
    def reply(details: dict[str, Any] | None) -> Completion:
        body = example(response_schema())
        body["usage"] = {
            "prompt_tokens": 5,
            "completion_tokens": 70,
            "total_tokens": 75,
            "completion_tokens_details": details,
            "prompt_tokens_details": details and {"cached_tokens": 2},
        }
        return parse_response(200, {}, json.dumps(body).encode())

    usage = _count_and_report([reply(first), reply(second)])
    assert usage["total_tokens"] == 150
    if first or second:
        assert usage["completion_tokens_details"] == {"reasoning_tokens": 64}
        assert usage["prompt_tokens_details"] == {"cached_tokens": 2}


def test_length_with_empty_content_and_null_details_asks_to_raise_max_completion_tokens():
    body = example(response_schema())
    body["choices"] = [
        {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": ""}}
    ]
    body["usage"] = {
        "prompt_tokens": 5,
        "completion_tokens": 100,
        "total_tokens": 105,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    }
    validate_response_body(body)
    completion = parse_response(200, {}, json.dumps(body).encode())
    with pytest.raises(CompletionError, match="Raise max_completion_tokens"):
        reply_value(completion.choices[0], completion, None)


def test_a_custom_tool_call_is_handed_downstream_with_its_name_and_input():
    body = example(response_schema())
    body["choices"][0]["finish_reason"] = "tool_calls"
    body["choices"][0]["message"]["refusal"] = None
    body["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_1", "type": "custom", "custom": {"name": "run_sql", "input": "SELECT 1"}},
        {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 7}'}},
    ]
    validate_response_body(body)
    completion = parse_response(200, {}, json.dumps(body).encode())
    assert reply_value(completion.choices[0], completion, None) == [
        {"id": "call_1", "type": "custom", "name": "run_sql", "input": "SELECT 1"},
        {"id": "call_2", "name": "lookup", "arguments": {"id": 7}},
    ]


def test_the_generated_chunks_are_the_contracts():
    assert len(CHUNKS) > 80
    for _, chunk in CHUNKS:
        validate_stream_chunk(chunk, null_finish_reason_ok=False)


def _assembled(chunk: dict[str, Any]) -> Completion:
    stream = StreamAssembler(200, {})
    stream.feed(json.dumps(chunk))
    stream.feed("[DONE]")
    return stream.completion()


@pytest.mark.parametrize(("label", "chunk"), CHUNKS, ids=_ids(CHUNKS))
def test_every_chunk_the_contract_allows_is_assembled_and_handed_downstream(label, chunk):
    try:
        completion = _assembled(chunk)
    except BadResponseError:
        assert not chunk["choices"], "only a stream without choices may be refused"
        return
    _hand_downstream(completion)
    full = _assembled(example(stream_chunk_schema()))
    _count_and_report([completion, full])
    _count_and_report([full, completion])
    delta = chunk["choices"][0].get("delta") or {}
    assert completion.text == delta.get("content")


def _o3_mini_request_schema() -> dict[str, Any]:
    """The request schema without ``max_tokens``, which o3-mini refuses (tests/unit/test_request.py)."""
    schema = request_schema()
    del schema["properties"]["max_tokens"]
    return schema


REQUESTS = list(variants(_o3_mini_request_schema(), nulls=True))


def _contract_allows(body: Any) -> bool:
    try:
        validate_request_body(body)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize(("label", "body"), REQUESTS, ids=_ids(REQUESTS))
def test_every_request_is_refused_or_sent_as_the_contract_allows(label, body):
    """Refused (with the field named), or mended into what the contract allows; never sent as it is
    when the contract refuses it. (Locally stricter than the contract: no empty ``messages``, a
    ``json_schema.name`` of 1 to 64 safe characters.)"""
    params = {name: value for name, value in body.items() if name not in ("model", "messages")}
    try:
        sent = build_body(body["model"], body["messages"], params)
    except InvalidRequestError as error:
        assert str(error).startswith("Request refused before sending: ")
        return
    validate_request_body(sent)


MESSAGES = [
    (label, message)
    for label, message in variants(request_schema()["properties"]["messages"]["items"], nulls=True)
    if isinstance(message, dict)
]


@pytest.mark.parametrize(("label", "message"), MESSAGES, ids=_ids(MESSAGES))
def test_every_message_the_contract_allows_is_sent_and_a_null_it_refuses_is_left_out(label, message):
    allowed = _contract_allows({"model": "o3-mini", "messages": [*USER, message]})
    try:
        sent = build_body("o3-mini", [*USER, message], {})
    except InvalidRequestError:
        assert not allowed, f"{label}: the contract allows {message!r}"
        return
    validate_request_body(sent)
    assert None not in sent["messages"][1].values()


@pytest.mark.parametrize(("label", "body"), REPLIES, ids=_ids(REPLIES))
def test_a_replys_message_echoed_back_is_sent(label, body):
    if not body["choices"]:
        return
    echoed = body["choices"][0]["message"]
    custom = any(call.get("type") == "custom" for call in echoed.get("tool_calls") or [])
    messages = [*USER, {**echoed, "role": "assistant"}, {"role": "user", "content": "Go on."}]
    try:
        sent = build_body("o3-mini", messages, {})
    except InvalidRequestError as error:
        assert custom, f"{label}: {error}"
        assert "messages[1].tool_calls[0].type" in str(error)
        return
    validate_request_body(sent)
    assert None not in sent["messages"][1].values()

from __future__ import annotations

import json

import pytest

from airflow_o3.budget import cost_usd
from airflow_o3.contract import DOCUMENT, LIST_PRICE, REFUSED
from airflow_o3.errors import InvalidRequestError
from airflow_o3.parameters import CONTRACT_PARAMETERS, parameter_value_problems
from airflow_o3.request import build_body, encode_body
from airflow_o3.response import parse_response
from tests.contract import request_schema, response_schema, validate_request_body
from tests.schema_variants import example

USER = [{"role": "user", "content": "Hello"}]


def test_the_parameter_list_is_the_documents_less_what_o3_mini_refuses():
    listed = set(request_schema()["properties"]) - {"model", "messages"}
    assert listed - set(REFUSED) == CONTRACT_PARAMETERS
    assert "max_tokens" in listed


def test_every_contract_parameter_builds_a_body_the_contract_accepts():
    body = build_body(
        "o3-mini",
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        {
            "reasoning_effort": "high",
            "max_completion_tokens": 100_000,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "seed": 7,
            "stop": ["END"],
            "n": 2,
            "provider": "openai",
            "stream": False,
            "stream_options": None,
        },
    )
    validate_request_body(body)
    assert "stream_options" not in body
    assert body["reasoning_effort"] == "high"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_parameters_o3_mini_rejects_are_refused_locally(name):
    with pytest.raises(InvalidRequestError, match=f"{name}: o3-mini refuses"):
        build_body("o3-mini", USER, {name: 1})


def test_max_tokens_error_points_to_max_completion_tokens():
    with pytest.raises(InvalidRequestError, match="use max_completion_tokens instead"):
        build_body("o3-mini", USER, {"max_tokens": 10})


def test_unknown_parameter_names_the_allowed_ones():
    with pytest.raises(
        InvalidRequestError, match=r"reasoning: unknown parameter \(fix: use one of .*reasoning_effort"
    ):
        build_body("o3-mini", USER, {"reasoning": "high"})


@pytest.mark.parametrize(
    ("params", "field", "fix"),
    [
        ({"reasoning_effort": "extreme"}, "reasoning_effort", "use 'low', 'medium' or 'high'"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "from 1 to 100000"),
        ({"max_completion_tokens": 100_001}, "max_completion_tokens", "from 1 to 100000"),
        ({"max_completion_tokens": "500"}, "max_completion_tokens", "whole number"),
        ({"stop": ["a", "b", 3]}, "stop", "at most 4 strings"),
        ({"seed": 0}, "seed", "1 or more"),
    ],
)
def test_out_of_contract_values_name_the_field_and_the_fix(params, field, fix):
    with pytest.raises(InvalidRequestError) as raised:
        build_body("o3-mini", USER, params)
    assert f"{field}:" in str(raised.value)
    assert fix in str(raised.value)


@pytest.mark.parametrize(
    ("messages", "path"),
    [
        ([], "messages:"),
        ([{"role": "bot", "content": "hi"}], "messages[0]:"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}],
            "messages[0].content[0].type:",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id:"),
        ([{"role": "user"}], "messages[0].content:"),
    ],
)
def test_roles_and_content_parts_outside_the_contract_are_refused(messages, path):
    with pytest.raises(InvalidRequestError, match="Fix: messages: ") as raised:
        build_body("o3-mini", messages, {})
    assert path in str(raised.value)


def test_assistant_content_may_be_left_out_and_null_is_not_sent():
    build_body("o3-mini", [*USER, {"role": "assistant", "refusal": None, "tool_calls": []}], {})
    body = build_body("o3-mini", [*USER, {"role": "assistant", "content": None}], {})
    assert body["messages"][1] == {"role": "assistant"}


def test_a_replys_message_echoed_back_with_nulls_is_sent_without_them():
    echoed = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "name": None,
        "annotations": [],
        "audio": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    tool = {"role": "tool", "tool_call_id": "call_1", "content": "42", "name": None}
    body = build_body("o3-mini", [*USER, echoed, tool], {})
    assert body["messages"][1:] == [
        {"role": "assistant", "annotations": [], "tool_calls": echoed["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    validate_request_body(body)


def test_a_message_with_tool_calls_null_or_name_null_is_sent_without_them():
    body = build_body(
        "o3-mini",
        [
            {"role": "user", "content": "hi", "name": None},
            {"role": "assistant", "content": "Hi", "tool_calls": None},
        ],
        {},
    )
    assert body["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hi"}]


@pytest.mark.parametrize(
    ("tool", "field"),
    [
        (
            {"type": "function", "function": {"name": "f", "parameters": {}, "description": None}},
            "description",
        ),
        ({"type": "function", "function": {"name": None, "parameters": {}}}, "name"),
    ],
)
def test_a_null_in_a_tool_definition_is_refused_naming_the_field(tool, field):
    with pytest.raises(InvalidRequestError, match=rf"tools\[0\]\.function\.{field}: .*Fix: tools: "):
        build_body("o3-mini", USER, {"tools": [tool]})


def test_a_null_json_schema_is_refused_naming_the_field():
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": None}}
    with pytest.raises(
        InvalidRequestError, match=r"response_format\.json_schema\.schema: .*Fix: response_format"
    ):
        build_body("o3-mini", USER, {"response_format": response_format})


def test_values_that_cannot_be_json_encoded_are_refused():
    with pytest.raises(InvalidRequestError, match="cannot be encoded as JSON"):
        build_body(
            "o3-mini",
            USER,
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": {1, 2}}}}]},
        )


def test_encoded_body_is_compact_utf8():
    assert encode_body({"a": "é", "b": [1]}) == '{"a":"é","b":[1]}'.encode()


def test_the_package_ships_the_contract_that_the_parameter_list_is_read_from():
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    listed = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert set(listed["schema"]["properties"]) - {"model", "messages"} - set(REFUSED) == CONTRACT_PARAMETERS


def test_a_value_outside_the_documents_schema_is_named_with_its_fix_when_the_dag_is_parsed():
    assert parameter_value_problems({"stream_options": {"include_usage": "yes"}, "n": None}) == [
        "stream_options.include_usage: Input should be a valid boolean "
        "(fix: use {'include_usage': true or false})"
    ]


def test_a_tool_choice_outside_the_contract_is_refused_with_the_fix_read_from_the_schema():
    with pytest.raises(InvalidRequestError) as raised:
        build_body("o3-mini", USER, {"tool_choice": {"type": "function", "function": {}}})
    assert str(raised.value) == (
        "Request refused before sending: tool_choice: got {'type': 'function', 'function': {}} "
        "(fix: use 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': a string}})"
    )


def test_the_budgets_estimate_is_the_list_price_of_the_tokens_the_reply_carried():
    reply = example(response_schema())
    reply.pop("meta", None)  # no cost of the service's own: the budget estimates it
    reply["usage"] = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "prompt_tokens_details": {"cached_tokens": 200},
    }
    completion = parse_response(200, {}, json.dumps(reply).encode())
    # 800 x $1.43 + 200 x $0.715 + 500 x $5.72 per million tokens
    assert cost_usd(completion) == pytest.approx(0.004147)
    assert LIST_PRICE.as_of == "2026-09"

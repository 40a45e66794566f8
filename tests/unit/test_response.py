from __future__ import annotations

import json

import pytest

from airflow_o3.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    OutOfCreditsError,
    RateLimitedError,
    ServerError,
)
from airflow_o3.response import parse_response, retry_after

BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1762343744,
    "model": "o3-mini-2025-01-31",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi", "refusal": None},
        }
    ],
    "usage": {
        "prompt_tokens": 5,
        "completion_tokens": 70,
        "total_tokens": 75,
        "completion_tokens_details": {"reasoning_tokens": 64},
    },
    "meta": {"usage": {"credits_used": 900, "usd_spent": 0.00045}},
}


def test_completion_carries_text_usage_and_the_services_cost():
    completion = parse_response(200, {"x-request-id": "req-1"}, json.dumps(BODY).encode())
    assert completion.text == "Hi"
    assert completion.finish_reason == "stop"
    assert completion.usage == BODY["usage"]
    assert completion.cost_usd == 0.00045
    assert completion.request_id == "req-1"
    assert completion.usage_record() == {**BODY["usage"], "usd_spent": 0.00045, "credits_used": 900.0}


def test_cost_falls_back_to_the_header():
    body = {k: v for k, v in BODY.items() if k != "meta"}
    completion = parse_response(201, {"X-AIMLAPI-USD-SPENT": "0.002"}, json.dumps(body).encode())
    assert completion.cost_usd == 0.002


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (
            401,
            {"error": {"message": "Invalid API key", "type": "auth", "code": "invalid_api_key"}},
            AuthenticationError,
            "Invalid API key (invalid_api_key)",
        ),
        (
            403,
            {
                "message": "Not enough credits",
                "path": "/v1/chat/completions",
                "requestId": "r-9",
                "statusCode": 403,
                "timestamp": "now",
            },
            OutOfCreditsError,
            "Not enough credits",
        ),
        (
            400,
            {
                "title": "Bad Request",
                "status": 400,
                "instance": "/v1/chat/completions",
                "message": "messages must not be empty",
                "requestId": "r-7",
                "timestamp": "now",
                "error": {"name": "ValidationError", "message": "messages must not be empty"},
            },
            BadRequestError,
            "Bad Request: messages must not be empty",
        ),
        (502, "<html>Bad gateway</html>", ServerError, "<html>Bad gateway</html>"),
        (429, {"error": {"message": "Slow down"}}, RateLimitedError, "Slow down"),
    ],
)
def test_each_error_shape_gives_the_right_type_and_message(status, body, kind, message):
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    with pytest.raises(kind) as raised:
        parse_response(status, {"x-request-id": "hdr-1"}, content)
    text = str(raised.value)
    assert f"HTTP {status}" in text
    assert message in text
    assert "Fix:" in text
    assert "request id" in text


def test_401_fix_names_the_key_and_403_names_credits():
    with pytest.raises(AuthenticationError, match="check the API key"):
        parse_response(401, {}, b"{}")
    with pytest.raises(OutOfCreditsError, match="credits"):
        parse_response(403, {}, b"{}")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"id": "x"}', "no choices"),
        (b"[1]", "not an object"),
        (b'{"choices": [{"index": 0}]}', "no message"),
    ],
)
def test_a_2xx_that_breaks_the_contract_is_a_bad_response_not_a_key_error(content, expected):
    with pytest.raises(BadResponseError, match=expected):
        parse_response(200, {}, content)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-requests": "12ms"}, 0.012),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_every_header_the_service_may_send(headers, seconds):
    assert retry_after(headers) == (pytest.approx(seconds) if seconds is not None else None)


def test_ids_the_service_sends_are_quoted_without_tokens_and_cut():
    body = {
        "id": "chatcmpl-" + "x" * 5000,
        "model": "o3-mini Bearer sk-live-model-echo",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    }
    headers = {"x-request-id": "Bearer sk-live-header-echo " + "y" * 5000}
    completion = parse_response(200, headers, json.dumps(body).encode())
    for value in (completion.id, completion.model, completion.request_id):
        assert "sk-live" not in value
        assert len(value) <= 128
    assert completion.text == "ok"

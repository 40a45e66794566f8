"""Tests of the o3-mini stand-in server itself, with ``requests`` (and ``httpx`` for streams) as clients."""

from __future__ import annotations

import http.client
import json
import math
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jsonschema
import pytest
import requests

from airflow_o3.errors import InvalidRequestError
from airflow_o3.request import build_body
from airflow_o3.testing import (
    Body,
    ConnectionReset,
    HttpError,
    NonJson,
    RateLimited,
    Reply,
    Stall,
    StandInServer,
    StreamCut,
    example_for_schema,
)
from airflow_o3.testing.pytest_plugin import o3_standin, o3_standin_connection  # noqa: F401 - fixtures
from tests.contract import validate_request_body, validate_response_body, validate_stream_chunk

if TYPE_CHECKING:
    from collections.abc import Iterator

USER = [{"role": "user", "content": "Summarise the ticket in one line."}]
BODY: dict[str, Any] = {"model": "o3-mini", "messages": USER}
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("body", [BODY, STREAM_BODY])
def test_the_request_bodies_these_tests_send_are_within_the_contract(body):
    validate_request_body(body, strict=True)


@pytest.fixture
def server() -> Iterator[StandInServer]:
    with StandInServer() as srv:
        yield srv


def _chat(srv: StandInServer, body: dict[str, Any] | None = None, **kwargs: Any) -> requests.Response:
    return requests.post(f"{srv.base_url}/chat/completions", json=body or BODY, timeout=10, **kwargs)


def _sse(response: requests.Response) -> list[Any]:
    """The ``data:`` payloads of an SSE response, each chunk checked against the contract, then
    JSON-decoded (``[DONE]`` stays a string)."""
    events: list[Any] = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
            if data != "[DONE]":
                validate_stream_chunk(events[-1])
    return events


# -- normal completions ----------------------------------------------------------------------------


def test_completion_is_valid_against_the_contract_and_echoes_the_last_user_message(server):
    messages = [{"role": "developer", "content": "Be brief."}, *USER]
    response = _chat(server, {"model": "o3-mini", "messages": messages})

    assert response.status_code == 200
    payload = response.json()
    validate_response_body(payload)
    assert payload["id"] == "chatcmpl-standin-1"
    assert response.headers["x-request-id"] == "req-standin-1"
    assert payload["object"] == "chat.completion"
    assert payload["model"] == "o3-mini-2025-01-31"
    assert isinstance(payload["created"], int)
    [choice] = payload["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {
        "role": "assistant",
        "content": "Stand-in reply to: Summarise the ticket in one line.",
        "refusal": None,
        "annotations": [],
    }


@pytest.mark.parametrize(("effort", "reasoning"), [(None, 192), ("low", 64), ("medium", 192), ("high", 512)])
def test_usage_counts_prompt_characters_and_bills_reasoning_by_effort(server, effort, reasoning):
    body = {**BODY, "reasoning_effort": effort} if effort else BODY
    response = _chat(server, body)

    usage = response.json()["usage"]
    content = response.json()["choices"][0]["message"]["content"]
    assert usage["prompt_tokens"] == math.ceil(len(USER[0]["content"]) / 4)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning
    assert usage["completion_tokens"] == reasoning + math.ceil(len(content) / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}


def test_cost_is_priced_at_the_aimlapi_list_price_in_body_and_headers(server):
    response = _chat(server)

    usage = response.json()["usage"]
    usd = usage["prompt_tokens"] * 1.43e-6 + usage["completion_tokens"] * 5.72e-6
    meta = response.json()["meta"]["usage"]
    assert meta["usd_spent"] == pytest.approx(usd)
    assert meta["credits_used"] == round(usd * 2_000_000)
    assert float(response.headers["x-aimlapi-usd-spent"]) == pytest.approx(usd)
    assert int(response.headers["x-aimlapi-credits-used"]) == meta["credits_used"]


def test_n_returns_that_many_choices(server):
    payload = _chat(server, {**BODY, "n": 3}).json()

    validate_response_body(payload)
    assert [c["index"] for c in payload["choices"]] == [0, 1, 2]


def test_reply_callable_computes_the_text():
    with StandInServer(reply=lambda body: f"{len(body['messages'])} message(s)", model="o3-mini") as srv:
        payload = _chat(srv).json()

    validate_response_body(payload)
    assert payload["choices"][0]["message"]["content"] == "1 message(s)"
    assert payload["model"] == "o3-mini"


def test_a_failing_reply_callable_answers_500_with_its_error():
    def broken(body: dict[str, Any]) -> str:
        raise KeyError("nope")

    with StandInServer(reply=broken) as srv:
        response = _chat(srv)

    assert response.status_code == 500
    assert "KeyError('nope')" in response.json()["error"]["message"]


def test_max_completion_tokens_below_reasoning_gives_length_with_empty_content(server):
    payload = _chat(server, {**BODY, "max_completion_tokens": 100}).json()

    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["choices"][0]["message"]["content"] == ""
    assert payload["usage"]["completion_tokens"] == 100
    assert payload["usage"]["completion_tokens_details"]["reasoning_tokens"] == 100


def test_json_schema_format_replies_with_a_valid_instance(server):
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "priority": {"enum": ["high", "low"]},
            "count": {"type": "integer", "minimum": 3},
            "score": {"type": "number"},
            "urgent": {"type": "boolean"},
            "due": {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}},
            "owner": {"$ref": "#/$defs/Person"},
        },
        "required": ["title", "priority", "count", "score", "urgent", "due", "tags", "owner"],
        "additionalProperties": False,
        "$defs": {
            "Tag": {"type": "string", "minLength": 10},
            "Person": {
                "type": "object",
                "properties": {"name": {"type": ["string", "null"]}},
                "required": ["name"],
                "additionalProperties": False,
            },
        },
    }
    body = {
        **BODY,
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
    }

    reply = json.loads(_chat(server, body).json()["choices"][0]["message"]["content"])

    jsonschema.validate(reply, schema)
    assert reply["priority"] == "high"
    assert reply["count"] == 3
    assert reply["due"] == "2025-01-31"
    assert reply["owner"] == {"name": "example"}


def test_example_for_schema_terminates_on_recursive_definitions():
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    "parent": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
            }
        },
    }

    jsonschema.validate(example_for_schema(schema), schema)


def test_json_object_format_wraps_the_reply(server):
    body = {**BODY, "response_format": {"type": "json_object"}}

    content = _chat(server, body).json()["choices"][0]["message"]["content"]

    assert json.loads(content) == {"reply": "Stand-in reply to: Summarise the ticket in one line."}


# -- validation, auth, other paths -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({**BODY, "temperature": 0.2}, "temperature", "unsupported_parameter"),
        ({**BODY, "max_tokens": 10}, "max_tokens", "unsupported_parameter"),
        ({"model": "o3-mini"}, "messages", "missing_required_parameter"),
        ({**BODY, "reasoning_effort": "extreme"}, "reasoning_effort", "invalid_value"),
        ({**BODY, "n": 0}, "n", "invalid_value"),
    ],
)
def test_bodies_o3_mini_rejects_get_400_in_openai_shape(server, body, param, code):
    response = _chat(server, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


@pytest.mark.parametrize(
    ("body", "param", "code", "says"),
    [
        (
            {**BODY, "messages": [{"role": "bot", "content": "hi"}]},
            "messages",
            "invalid_value",
            "messages[0]",
        ),
        ({**BODY, "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value", "stop"),
        ({**BODY, "reasoning": "high"}, "reasoning", "unknown_parameter", "reasoning"),
    ],
)
def test_the_stand_in_refuses_what_the_provider_refuses_before_sending(server, body, param, code, says):
    response = _chat(server, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code)
    assert says in error["message"]
    with pytest.raises(InvalidRequestError):
        build_body(body["model"], body["messages"], {k: v for k, v in body.items() if k not in BODY})


def test_body_that_is_not_json_gets_400_and_is_recorded_with_body_none(server):
    response = requests.post(f"{server.base_url}/chat/completions", data=b"{nope", timeout=10)

    assert response.status_code == 400
    assert server.chat_requests[0].body is None
    assert server.chat_requests[0].raw == b"{nope"


def test_api_key_is_required_when_configured():
    with StandInServer(api_key="sk-right") as srv:
        missing = _chat(srv)
        wrong = _chat(srv, headers={"Authorization": "Bearer sk-wrong"})
        right = _chat(srv, headers={"Authorization": "Bearer sk-right"})
        models = requests.get(f"{srv.base_url}/models", timeout=10)

    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert right.status_code == 200
    assert models.status_code == 200


def test_models_lists_o3_mini_without_a_key(server):
    payload = requests.get(f"{server.base_url}/models", timeout=10).json()

    assert payload["object"] == "list"
    assert payload["data"][0]["id"] == "o3-mini"
    assert payload["data"][0]["object"] == "model"


def test_unknown_path_is_404_in_aimlapi_shape(server):
    response = requests.get(f"{server.base_url}/embeddings", timeout=10)

    assert response.status_code == 404
    assert set(response.json()) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert response.json()["statusCode"] == 404


def test_every_request_is_recorded_and_clear_forgets_them(server):
    requests.get(f"{server.base_url}/models", timeout=10)
    _chat(server, headers={"X-Client-Request-Id": "run-1:task-a"})

    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    [chat] = server.chat_requests
    assert chat.body == BODY
    assert json.loads(chat.raw) == BODY
    assert chat.header("x-client-request-id") == "run-1:task-a"
    assert chat.header("CONTENT-TYPE") == "application/json"
    assert chat.received_at == pytest.approx(time.time(), abs=5)

    server.clear()

    assert server.requests == []
    assert server.stats["received"] == 0


@pytest.mark.parametrize(("sent", "echoed"), [("run-1:task.a_b-c", "run-1:task.a_b-c"), ("bad id!", None)])
def test_valid_client_request_id_is_echoed_and_an_invalid_one_dropped(server, sent, echoed):
    response = _chat(server, headers={"X-Client-Request-Id": sent})

    assert response.headers.get("X-Client-Request-Id") == echoed


# -- scripted answers ------------------------------------------------------------------------------


def test_script_is_consumed_in_order_then_normal_replies_resume(server):
    server.script(HttpError(503), Reply("scripted"))

    statuses = [_chat(server).status_code for _ in range(3)]

    assert statuses == [503, 200, 200]
    assert server.script_pending == 0
    assert server.stats["scripted"] == 2


def test_openai_error_shape(server):
    server.script(HttpError(400, "Bad value", param="seed", code="invalid_value", headers={"x-extra": "1"}))

    response = _chat(server)

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Bad value",
            "type": "invalid_request_error",
            "param": "seed",
            "code": "invalid_value",
        }
    }
    assert response.headers["x-request-id"] == "req-standin-1"
    assert response.headers["x-extra"] == "1"


def test_aimlapi_error_shape(server):
    server.script(HttpError(403, "Out of credits", shape="aimlapi"))

    payload = _chat(server).json()

    assert payload["message"] == "Out of credits"
    assert payload["statusCode"] == 403
    assert payload["path"] == "/v1/chat/completions"
    assert payload["requestId"] == "req-standin-1"
    assert payload["timestamp"].endswith("Z")


def test_problem_json_error_shape(server):
    server.script(HttpError(502, "Upstream failed", shape="problem"))

    response = _chat(server)

    assert response.headers["Content-Type"] == "application/problem+json"
    payload = response.json()
    assert payload["title"] == "Bad Gateway"
    assert payload["status"] == 502
    assert payload["instance"] == "/v1/chat/completions"
    assert payload["error"] == {"name": "BadGatewayException", "message": "Upstream failed"}
    assert {"message", "requestId", "timestamp"} <= set(payload)


def test_text_error_shape_defaults_to_the_status_phrase(server):
    server.script(HttpError(504, shape="text"))

    response = _chat(server)

    assert response.status_code == 504
    assert response.text == "Gateway Timeout"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (RateLimited(), {"Retry-After": "1"}),
        (RateLimited(retry_after=0.05, retry_after_ms=True), {"Retry-After": "0.05", "retry-after-ms": "50"}),
        (RateLimited(retry_after=None, reset_header="20ms"), {"x-ratelimit-reset-requests": "20ms"}),
    ],
)
def test_rate_limited_sends_the_requested_headers(server, item, expected):
    server.script(item)

    response = _chat(server)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    hints = {"Retry-After", "retry-after-ms", "x-ratelimit-reset-requests"}
    assert {k: v for k, v in response.headers.items() if k in hints} == expected


def test_connection_reset_gives_the_client_a_connection_error(server):
    server.script(ConnectionReset())

    with pytest.raises(requests.ConnectionError):
        _chat(server)
    assert _chat(server).status_code == 200


def test_stall_triggers_the_client_read_timeout(server):
    server.script(Stall(1.0))

    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{server.base_url}/chat/completions", json=BODY, timeout=(5, 0.2))
    assert _chat(server).status_code == 200


def test_stop_closes_a_stalled_request_unanswered_and_promptly():
    srv = StandInServer().start()
    srv.script(Stall(60))
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(_chat(srv))
        except requests.RequestException as exc:
            outcome.append(exc)

    client = threading.Thread(target=call)
    client.start()
    while not srv.chat_requests:
        time.sleep(0.01)

    started = time.monotonic()
    srv.stop()
    client.join(timeout=5)

    assert time.monotonic() - started < 2
    assert isinstance(outcome[0], requests.ConnectionError)


def test_non_json_body_under_200(server):
    server.script(NonJson())

    response = _chat(server)

    assert response.status_code == 200
    assert response.text == "<html>bad gateway</html>"
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_body_sends_any_json(server):
    server.script(Body(status=201, json={"id": "x", "object": "chat.completion"}, headers={"x-a": "b"}))

    response = _chat(server)

    assert response.status_code == 201
    assert response.json() == {"id": "x", "object": "chat.completion"}
    assert response.headers["x-a"] == "b"


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 4'}}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (Reply("", finish_reason="length"), {"content": ""}),
        (Reply("", finish_reason="content_filter"), {"content": ""}),
        (Reply("", refusal="I can't help with that."), {"refusal": "I can't help with that."}),
        (Reply("", finish_reason="tool_calls", tool_calls=[TOOL_CALL]), {"tool_calls": [TOOL_CALL]}),
    ],
)
def test_reply_carries_the_scripted_fields_within_the_contract(server, item, message):
    server.script(item)

    payload = _chat(server).json()

    validate_response_body(payload)
    choice = payload["choices"][0]
    assert choice["finish_reason"] == item.finish_reason
    assert message.items() <= choice["message"].items()


def test_reply_with_null_content_and_custom_usage(server):
    usage = {"prompt_tokens": 1000, "completion_tokens": 0, "total_tokens": 1000}
    server.script(Reply(None, usage=usage))

    payload = _chat(server).json()

    assert payload["choices"][0]["message"]["content"] is None
    assert payload["usage"] == usage
    assert payload["meta"]["usage"]["usd_spent"] == pytest.approx(1000 * 1.43e-6)


def test_stream_cut_on_a_plain_request_truncates_the_body(server):
    server.script(StreamCut())

    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _chat(server)
    assert server.stats["delivered"] == 0


# -- streaming -------------------------------------------------------------------------------------


def test_stream_sends_role_content_finish_usage_then_done(server):
    text = "first line of the reply\nsecond line, a bit longer than sixteen characters\n"
    server.script(Reply(text))

    with _chat(server, STREAM_BODY, stream=True) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = _sse(response)

    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(deltas) == text
    assert all(len(d) <= 16 and "\n" not in d[:-1] for d in deltas)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 192
    assert chunks[-1]["meta"]["usage"]["credits_used"] > 0
    assert server.stats["delivered"] == 1


def test_stream_without_include_usage_has_no_usage_chunk(server):
    with _chat(server, {**BODY, "stream": True}, stream=True) as response:
        events = _sse(response)

    assert events[-1] == "[DONE]"
    assert all(e["choices"] and "usage" not in e for e in events[:-1])


def test_stream_sends_each_tool_call_whole_in_one_contract_shaped_delta(server):
    server.script(Reply(None, finish_reason="tool_calls", tool_calls=[TOOL_CALL]))

    with _chat(server, STREAM_BODY, stream=True) as response:
        events = _sse(response)

    parts = [d for e in events[:-1] if e["choices"] for d in e["choices"][0]["delta"].get("tool_calls", [])]
    assert parts == [{"index": 0, **TOOL_CALL}]
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_works_with_httpx_on_a_kept_alive_connection(server):
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(2):
            with client.stream("POST", "/chat/completions", json=STREAM_BODY) as response:
                lines = [line for line in response.iter_lines() if line]
            assert lines[-1] == "data: [DONE]"


def test_stream_cut_closes_after_n_content_chunks_without_done(server):
    server.script(StreamCut(after_chunks=2))
    received = []

    with (
        _chat(server, STREAM_BODY, stream=True) as response,
        pytest.raises(requests.exceptions.ChunkedEncodingError),
    ):
        for line in response.iter_lines(decode_unicode=True):
            if line:
                received.append(line)

    assert len(received) == 3  # the role chunk and two content chunks
    assert all("[DONE]" not in line and '"finish_reason":null' in line for line in received)
    assert server.stats["delivered"] == 0


def test_stream_cut_is_seen_by_httpx_as_an_incomplete_body(server):
    server.script(StreamCut(after_chunks=1))

    with (
        httpx.stream("POST", f"{server.base_url}/chat/completions", json=STREAM_BODY, timeout=10) as response,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        list(response.iter_lines())


# -- rate limit, fault injection, transport --------------------------------------------------------


def test_rate_limit_answers_429_with_retry_hints_then_admits_after_the_wait():
    with StandInServer(max_requests_per_second=5) as srv, requests.Session() as session:
        responses = [
            session.post(f"{srv.base_url}/chat/completions", json=BODY, timeout=10) for _ in range(8)
        ]
        limited = [r for r in responses if r.status_code == 429]
        assert [r.status_code for r in responses[:5]] == [200] * 5
        assert limited
        hint = limited[0]
        wait = float(hint.headers["Retry-After"])
        assert 0 < wait <= 0.2
        assert int(hint.headers["retry-after-ms"]) == math.ceil(wait * 1000)
        assert hint.headers["x-ratelimit-limit-requests"] == "5"
        assert hint.headers["x-ratelimit-remaining-requests"] == "0"
        assert hint.headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))
        assert hint.json()["error"]["code"] == "rate_limit_exceeded"
        time.sleep(wait)
        assert session.post(f"{srv.base_url}/chat/completions", json=BODY, timeout=10).status_code == 200
        assert srv.stats["rate_limited"] == len(limited)


def test_injected_faults_are_counted_and_deliveries_keyed_by_client_request_id(server):
    server.inject_faults(rate=0.3, seed=7)

    statuses = [
        _chat(server, headers={"X-Client-Request-Id": f"req-{i % 50}"}).status_code for i in range(200)
    ]

    stats = server.stats
    assert stats["received"] == 200
    assert stats["faults_injected"] == sum(s != 200 for s in statuses)
    assert stats["delivered"] == statuses.count(200)
    assert 30 < stats["faults_injected"] < 90
    assert set(statuses) <= {200, 429, 500, 502, 503, 504}
    assert sum(server.delivered_by_key.values()) == stats["delivered"]
    assert set(server.delivered_by_key) <= {f"req-{i}" for i in range(50)}


def test_injected_429_says_retry_after_zero(server):
    server.inject_faults(rate=1.0, statuses=(429,))

    response = _chat(server)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0"


def test_deliveries_without_client_request_id_are_keyed_by_body_hash(server):
    _chat(server)
    _chat(server)

    assert list(server.delivered_by_key.values()) == [2]
    assert next(iter(server.delivered_by_key)).startswith("sha256:")


def test_accepted_sockets_have_tcp_nodelay(server):
    with requests.Session() as session:
        session.get(f"{server.base_url}/models", timeout=10)
        open_sockets = list(server._httpd._connections)  # type: ignore[union-attr]

        assert open_sockets
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in open_sockets)


def test_keep_alive_serves_many_requests_on_one_connection_quickly(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    started = time.monotonic()
    for _ in range(50):
        connection.request(
            "POST", "/v1/chat/completions", json.dumps(BODY), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["object"] == "chat.completion"
    connection.close()

    assert time.monotonic() - started < 1.5


def test_64_concurrent_requests_with_latency_overlap():
    with StandInServer(latency=0.2) as srv:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=64) as pool:
            statuses = list(pool.map(lambda _: _chat(srv).status_code, range(64)))
        elapsed = time.monotonic() - started

    assert statuses == [200] * 64
    assert elapsed < 64 * 0.2 / 4


# -- entry points ----------------------------------------------------------------------------------


def test_connection_json_and_uri_both_parse_to_the_base_url_and_key(server):
    from airflow.providers.common.compat.sdk import Connection

    from_json = Connection.from_json(server.connection_json(), conn_id="aimlapi_default")
    if hasattr(Connection, "from_uri"):  # Airflow 3
        from_uri = Connection.from_uri(server.connection_uri("k/1"), conn_id="aimlapi_default")
    else:  # Airflow 2 parses a URI in the constructor
        from_uri = Connection(conn_id="aimlapi_default", uri=server.connection_uri("k/1"))

    assert (from_json.conn_type, from_json.host, from_json.password) == (
        "aimlapi",
        server.base_url,
        "standin-test-key",
    )
    assert (from_uri.conn_type, from_uri.host, from_uri.port, from_uri.password) == (
        "aimlapi",
        server.base_url,
        None,
        "k/1",
    )


def test_fixtures_start_a_server_and_export_the_connection(o3_standin_connection):  # noqa: F811
    import os

    conn = json.loads(os.environ["AIRFLOW_CONN_AIMLAPI_DEFAULT"])
    assert conn == json.loads(o3_standin_connection.connection_json())
    assert requests.get(f"{conn['host']}/models", timeout=10).status_code == 200


def test_command_line_prints_the_base_url_and_connection_then_serves():
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_o3.testing", "--port", "0", "--latency", "0.01"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        export = process.stdout.readline()
        base_url = banner.rsplit(" ", 1)[-1].strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert export.startswith("export AIRFLOW_CONN_AIMLAPI_DEFAULT=")
        assert base_url in export
        assert requests.post(f"{base_url}/chat/completions", json=BODY, timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)

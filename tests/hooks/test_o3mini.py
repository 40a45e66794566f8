from __future__ import annotations

import json
import re

import pytest

from airflow_o3.deprecations import O3DeprecationWarning
from airflow_o3.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ConfigurationError,
    ConnectError,
    InvalidRequestError,
    OutOfCreditsError,
    RequestTimeoutError,
    ServerError,
)
from airflow_o3.hooks import O3MiniHook
from airflow_o3.settings import DEFAULT_BASE_URL, Timeouts, base_url
from airflow_o3.testing import Body, ConnectionReset, HttpError, NonJson, RateLimited, Reply, Stall
from tests.contract import validate_request_body
from tests.helpers import USER, fast_retry, list_price_usd, usage

FAST = fast_retry(4)


@pytest.fixture
def hook(o3_standin_connection):
    return O3MiniHook(request_retry=FAST)


def test_chat_posts_a_contract_valid_body_and_returns_a_typed_completion(hook, o3_standin_connection):
    sent_usage = usage(prompt=12, completion=530, reasoning=512)
    o3_standin_connection.script(Reply("2, 3 and 5.", usage=sent_usage))
    completion = hook.chat(USER, reasoning_effort="high", max_completion_tokens=5000, seed=3)
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body)
    assert request.path == "/v1/chat/completions"
    assert request.header("Authorization") == "Bearer standin-test-key"
    assert request.body == {
        "model": "o3-mini",
        "messages": USER,
        "reasoning_effort": "high",
        "max_completion_tokens": 5000,
        "seed": 3,
    }
    assert completion.text == "2, 3 and 5."
    assert completion.finish_reason == "stop"
    assert completion.model == "o3-mini-2025-01-31"
    assert completion.id.startswith("chatcmpl-standin-")
    assert completion.usage == sent_usage
    assert completion.cost_usd == pytest.approx(list_price_usd(prompt=12, completion=530), abs=1e-9)
    assert completion.raw["choices"][0]["message"]["content"] == completion.text


def test_one_pooled_session_serves_every_call(hook, o3_standin_connection):
    hook.chat(USER)
    session = hook.session
    hook.chat(USER)
    assert hook.session is session
    assert len(o3_standin_connection.chat_requests) == 2


def test_a_prompt_with_a_lone_surrogate_is_refused_before_any_request(hook, o3_standin_connection):
    with pytest.raises(InvalidRequestError, match="cannot be encoded as JSON"):
        hook.chat([{"role": "user", "content": "half of an emoji: \ud83d"}])
    assert o3_standin_connection.chat_requests == []


@pytest.mark.parametrize("name", ["temperature", "top_p", "max_tokens", "logit_bias", "parallel_tool_calls"])
def test_rejected_parameters_fail_before_any_request(hook, o3_standin_connection, name):
    with pytest.raises(InvalidRequestError, match=name):
        hook.chat(USER, **{name: 1})
    assert o3_standin_connection.chat_requests == []


@pytest.mark.parametrize(
    ("fault", "error", "fragment"),
    [
        (
            HttpError(401, "Invalid API key", shape="openai"),
            AuthenticationError,
            "check the API key (the password field) of connection 'aimlapi_default'",
        ),
        (HttpError(403, "Not enough credits", shape="aimlapi"), OutOfCreditsError, "credits"),
        (HttpError(400, "messages: invalid", shape="problem"), BadRequestError, "messages: invalid"),
        (HttpError(404, "Model not found", shape="openai"), BadRequestError, "Model not found"),
    ],
)
def test_client_errors_fail_fast_with_status_message_and_fix(
    hook, o3_standin_connection, fault, error, fragment
):
    o3_standin_connection.script(fault)
    with pytest.raises(error) as raised:
        hook.chat(USER)
    assert len(o3_standin_connection.chat_requests) == 1
    assert f"HTTP {fault.status}" in str(raised.value)
    assert fragment in str(raised.value)
    assert "Fix:" in str(raised.value)
    assert "standin-test-key" not in str(raised.value)


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504])
def test_server_errors_are_retried_then_delivered(hook, o3_standin_connection, status):
    o3_standin_connection.script(HttpError(status, "upstream failed"))
    completion = hook.chat(USER)
    assert completion.text
    assert len(o3_standin_connection.chat_requests) == 2


def test_429_with_retry_after_is_retried_once_then_delivered(hook, o3_standin_connection):
    o3_standin_connection.script(RateLimited(retry_after=0.05))
    assert hook.chat(USER).text
    assert len(o3_standin_connection.chat_requests) == 2


def test_429_without_retry_after_is_retried_with_backoff(hook, o3_standin_connection):
    o3_standin_connection.script(RateLimited(retry_after=None), RateLimited(retry_after=None))
    assert hook.chat(USER).text
    assert len(o3_standin_connection.chat_requests) == 3


def test_retries_that_run_out_say_how_many_attempts(hook, o3_standin_connection):
    o3_standin_connection.script(*(HttpError(503, "overloaded") for _ in range(4)))
    with pytest.raises(ServerError, match=r"overloaded.*gave up after 4 attempt\(s\)"):
        hook.chat(USER)
    assert len(o3_standin_connection.chat_requests) == 4


def test_connection_reset_is_retried(hook, o3_standin_connection):
    o3_standin_connection.script(ConnectionReset())
    assert hook.chat(USER).text
    assert len(o3_standin_connection.chat_requests) == 2


def test_read_timeout_is_retried(o3_standin_connection):
    o3_standin_connection.script(Stall(1.0))
    hook = O3MiniHook(request_retry=FAST, read_timeout=0.3)
    assert hook.chat(USER).text
    assert len(o3_standin_connection.chat_requests) == 2


def test_read_timeouts_that_run_out_name_the_timeout_setting(o3_standin_connection):
    o3_standin_connection.script(Stall(1.0), Stall(1.0))
    hook = O3MiniHook(request_retry={**FAST, "max_attempts": 2}, read_timeout=0.2)
    with pytest.raises(RequestTimeoutError, match="read_timeout"):
        hook.chat(USER)


def test_unreachable_service_is_a_connect_error(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIMLAPI_DEFAULT",
        json.dumps({"conn_type": "aimlapi", "host": "http://127.0.0.1:9/v1", "password": "k"}),
    )
    with pytest.raises(ConnectError, match=r"could not reach http://127\.0\.0\.1:9/v1"):
        O3MiniHook(request_retry={"max_attempts": 2, "initial_backoff": 0}).chat(USER)


@pytest.mark.parametrize(
    ("fault", "fragment"),
    [
        (NonJson(status=200, body="<html>oops</html>"), "not JSON"),
        (Body(status=200, json={"id": "x"}), "no choices"),
    ],
)
def test_a_2xx_that_breaks_the_contract_is_a_bad_response(hook, o3_standin_connection, fault, fragment):
    o3_standin_connection.script(fault)
    with pytest.raises(BadResponseError, match=fragment):
        hook.chat(USER)
    assert len(o3_standin_connection.chat_requests) == 1


def test_wrong_key_is_an_authentication_error(monkeypatch):
    from airflow_o3.testing import StandInServer

    with StandInServer(api_key="the-right-key") as server:
        monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", server.connection_json("a-wrong-key"))
        with pytest.raises(AuthenticationError) as raised:
            O3MiniHook().chat(USER)
    assert "a-wrong-key" not in str(raised.value)


def test_test_connection_spends_nothing_and_says_what_it_checked(hook, o3_standin_connection):
    ok, message = hook.test_connection()
    assert ok
    assert "/v1/models" in message
    assert "'o3-mini' is listed" in message
    assert o3_standin_connection.chat_requests == []


def test_test_connection_reports_an_unreachable_service(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIMLAPI_DEFAULT",
        json.dumps({"conn_type": "aimlapi", "host": "http://127.0.0.1:9/v1", "password": "k"}),
    )
    ok, message = O3MiniHook().test_connection()
    assert not ok
    assert "could not reach http://127.0.0.1:9/v1" in message


def test_connection_extras_set_model_timeouts_and_retries(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIMLAPI_DEFAULT",
        json.dumps(
            {
                "conn_type": "aimlapi",
                "password": "k",
                "extra": {
                    "model": "o3-mini-2025-01-31",
                    "connect_timeout": 3,
                    "read_timeout": "900",
                    "max_attempts": 2,
                    "max_retry_seconds": 60,
                    "attempt_timeout": "1200",
                    "max_reply_bytes": 1_000_000,
                },
            }
        ),
    )
    settings = O3MiniHook().settings
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.model == "o3-mini-2025-01-31"
    assert settings.timeouts == Timeouts(connect=3.0, read=900.0, attempt=1200.0)
    assert settings.max_reply_bytes == 1_000_000
    assert (settings.retry.max_attempts, settings.retry.max_retry_seconds) == (2, 60.0)
    overridden = O3MiniHook(request_retry={"max_attempts": 7}, read_timeout=30).settings
    assert (overridden.retry.max_attempts, overridden.retry.max_retry_seconds) == (7, 60.0)
    assert overridden.timeouts == Timeouts(connect=3.0, read=30.0, attempt=1200.0)
    assert O3MiniHook(read_timeout=3600).settings.timeouts.attempt == 3600.0


def test_the_attempt_timeout_defaults_to_30_minutes_and_never_undercuts_the_read_timeout(monkeypatch):
    connection = {"conn_type": "aimlapi", "password": "k", "extra": {"read_timeout": 2400}}
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", json.dumps(connection))
    assert O3MiniHook().settings.timeouts == Timeouts(connect=10.0, read=2400.0, attempt=2400.0)
    assert Timeouts().attempt == 1800.0
    connection["extra"] = {"attempt_timeout": 300}
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", json.dumps(connection))
    assert O3MiniHook().settings.timeouts == Timeouts(connect=10.0, read=300.0, attempt=300.0)
    connection["extra"] = {"attempt_timeout": 300, "read_timeout": 600}
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", json.dumps(connection))
    with pytest.raises(InvalidRequestError, match="attempt_timeout=300s is shorter than read_timeout=600s"):
        O3MiniHook().chat([{"role": "user", "content": "hi"}])
    with pytest.raises(
        InvalidRequestError, match=r"attempt_timeout=5s is shorter than read_timeout=10s \(fix: "
    ):
        Timeouts(read=10, attempt=5)
    with pytest.raises(InvalidRequestError, match=r"read_timeout=nan is not a finite number .*\(fix: "):
        Timeouts(read=float("nan"))


def test_uri_form_connection_with_encoded_base_url(monkeypatch, o3_standin):
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", o3_standin.connection_uri("uri-key"))
    assert O3MiniHook().settings.base_url == o3_standin.base_url
    assert O3MiniHook(request_retry=FAST).chat(USER).text
    assert o3_standin.chat_requests[0].header("Authorization") == "Bearer uri-key"


def test_connection_without_key_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", json.dumps({"conn_type": "aimlapi"}))
    with pytest.raises(InvalidRequestError, match="'aimlapi_default' has no API key"):
        O3MiniHook().chat(USER)


@pytest.mark.parametrize(
    ("host", "port", "schema", "expected"),
    [
        (None, None, None, "https://api.aimlapi.com/v1"),
        ("api.aimlapi.com", None, None, "https://api.aimlapi.com/v1"),
        ("api.aimlapi.com", None, "v1", "https://api.aimlapi.com/v1"),
        ("proxy.internal", 8443, "openai/v1", "https://proxy.internal:8443/openai/v1"),
        ("http://127.0.0.1:8765/v1/", None, None, "http://127.0.0.1:8765/v1"),
    ],
)
def test_base_url_from_connection_fields(host, port, schema, expected):
    assert base_url(host, port, schema) == expected


def test_connection_form_metadata_matches_the_hook():
    from airflow_o3.get_provider_info import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "airflow-o3"
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == O3MiniHook.conn_type
    assert conn_type["hook-class-name"] == f"{O3MiniHook.__module__}.{O3MiniHook.__name__}"
    assert O3MiniHook.get_ui_field_behaviour()["relabeling"] == {"host": "Base URL", "password": "API Key"}


def test_the_old_hook_arguments_retry_and_timeout_still_work_with_a_deprecation_warning(
    o3_standin_connection,
):
    with pytest.warns(O3DeprecationWarning) as warned:
        hook = O3MiniHook(retry={"max_attempts": 3}, timeout=42)
    assert [str(w.message).split(";")[0] for w in warned] == [
        "O3MiniHook: retry is renamed request_retry",
        "O3MiniHook: timeout is renamed read_timeout",
    ]
    assert (hook.settings.retry.max_attempts, hook.settings.timeouts.read) == (3, 42.0)


@pytest.mark.parametrize(
    ("connection", "fragment"),
    [
        ({"host": "https://user:secret@proxy.internal/v1"}, "the connection's host has an '@'"),
        ({"extra": {"read_timeout": "soon"}}, "connection extra read_timeout='soon'"),
        ({"extra": {"max_attempts": 0}}, "retry setting max_attempts is 0"),
        ({"password": ""}, "has no API key"),
    ],
)
def test_an_unusable_connection_is_a_configuration_error_raised_before_any_request(
    monkeypatch, o3_standin, connection, fragment
):
    fields = {"conn_type": "aimlapi", "host": o3_standin.base_url, "password": "k", **connection}
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", json.dumps(fields))
    with pytest.raises(ConfigurationError, match=re.escape(fragment)) as raised:
        O3MiniHook().chat(USER)
    assert "secret" not in str(raised.value)
    assert o3_standin.chat_requests == []

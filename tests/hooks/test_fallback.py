"""Fallback connections: a call that fails for good through its connection moves on to the next one.

Two stand-in servers, each behind its own ``aimlapi`` connection: ``aimlapi_default`` (the first)
and ``aimlapi_backup`` (the fallback, its own key and default model).
"""

from __future__ import annotations

import json
import logging

import pytest

from airflow_o3.cache import CacheSettings, ResponseCache
from airflow_o3.errors import BadRequestError, ConfigurationError, OutOfCreditsError
from airflow_o3.hooks import O3MiniHook
from airflow_o3.testing import HttpError, Reply, StandInServer
from tests.helpers import USER, fast_retry

FAST = fast_retry(2)
BACKUP_KEY = "backup-key-0123"
BACKUP_MODEL = "o3-mini-2025-01-31-backup"


@pytest.fixture
def backup(monkeypatch):
    """A second stand-in, behind the connection ``aimlapi_backup`` with its own key and model."""
    with StandInServer() as server:
        connection = {
            "conn_type": "aimlapi",
            "host": server.base_url,
            "password": BACKUP_KEY,
            "extra": {"model": BACKUP_MODEL},
        }
        monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_BACKUP", json.dumps(connection))
        yield server


def hook() -> O3MiniHook:
    return O3MiniHook(request_retry=FAST, fallback_conn_ids=("aimlapi_backup",))


@pytest.mark.parametrize(
    ("failures", "why"),
    [
        ([HttpError(403, "Not enough credits", shape="aimlapi")], "OutOfCreditsError (HTTP 403)"),
        ([HttpError(401, "Invalid API key")], "AuthenticationError (HTTP 401)"),
        ([HttpError(500), HttpError(500)], "ServerError (HTTP 500)"),
    ],
    ids=["403-out-of-credits", "401-unauthorised", "500-after-its-retries"],
)
def test_a_final_failure_of_the_first_connection_sends_the_request_once_to_the_fallback(
    o3_standin_connection, backup, caplog, failures, why
):
    o3_standin_connection.script(*failures)
    backup.script(Reply("2, 3 and 5."))
    with caplog.at_level(logging.WARNING):
        completion = hook().chat(USER)
    assert len(o3_standin_connection.chat_requests) == len(failures)
    (request,) = backup.chat_requests
    assert request.header("Authorization") == f"Bearer {BACKUP_KEY}"
    assert request.body == {"model": BACKUP_MODEL, "messages": USER}
    assert completion.conn_id == "aimlapi_backup"
    assert completion.text == "2, 3 and 5."
    (warning,) = [r.getMessage() for r in caplog.records if "fallback connection" in r.getMessage()]
    assert warning.startswith("Connection 'aimlapi_default' failed (" + why)
    assert warning.endswith("the same request goes to fallback connection 'aimlapi_backup'")
    assert BACKUP_KEY not in caplog.text and "standin-test-key" not in caplog.text


def test_a_400_bad_request_fails_at_once_and_the_fallback_receives_nothing(o3_standin_connection, backup):
    o3_standin_connection.script(HttpError(400, "messages: invalid"))
    with pytest.raises(BadRequestError, match="messages: invalid"):
        hook().chat(USER)
    assert len(o3_standin_connection.chat_requests) == 1
    assert backup.chat_requests == []


def test_a_local_error_is_raised_before_any_connection_is_asked(o3_standin_connection, backup):
    with pytest.raises(ConfigurationError, match="fallback_conn_ids='aimlapi_backup' is one string"):
        O3MiniHook(fallback_conn_ids="aimlapi_backup")
    with pytest.raises(ConfigurationError, match="names connection 'aimlapi_default' twice"):
        O3MiniHook(fallback_conn_ids=["aimlapi_default"])
    assert o3_standin_connection.chat_requests == [] and backup.chat_requests == []


def test_when_the_first_connection_answers_the_completion_names_it_and_the_fallback_is_not_read(
    o3_standin_connection, backup, monkeypatch
):
    monkeypatch.delenv("AIRFLOW_CONN_AIMLAPI_BACKUP")  # not even read when not needed
    completion = hook().chat(USER)
    assert completion.conn_id == "aimlapi_default"
    assert len(o3_standin_connection.chat_requests) == 1
    assert backup.chat_requests == []


def test_a_model_the_request_names_itself_goes_to_the_fallback_unchanged(o3_standin_connection, backup):
    o3_standin_connection.script(HttpError(403))
    hook().chat(USER, model="o3-mini-2025-01-31-pinned")
    assert backup.chat_requests[0].body["model"] == "o3-mini-2025-01-31-pinned"


def test_when_every_connection_fails_the_last_error_is_raised_naming_the_last_connection(
    o3_standin_connection, backup
):
    o3_standin_connection.script(HttpError(403))
    backup.script(HttpError(403, "Not enough credits either", shape="aimlapi"))
    with pytest.raises(OutOfCreditsError, match="Not enough credits either") as raised:
        hook().chat(USER)
    assert raised.value.conn_id == "aimlapi_backup"
    assert "connection 'aimlapi_backup'" in str(raised.value)


def test_a_reply_paid_through_the_fallback_is_cached_under_it_and_a_retry_pays_nothing(
    o3_standin_connection, backup, tmp_path
):
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path)))
    o3_standin_connection.script(HttpError(403), HttpError(403))
    paid = hook().chat(USER, cache=cache)
    assert (paid.conn_id, paid.from_cache) == ("aimlapi_backup", False)

    retried = hook().chat(USER, cache=cache)  # the task's retry: the first connection still has no credits
    assert (retried.conn_id, retried.from_cache, retried.text) == ("aimlapi_backup", True, paid.text)
    assert len(o3_standin_connection.chat_requests) == 1
    assert len(backup.chat_requests) == 1
    entries = {path.stem for path in tmp_path.rglob("*.json")}
    keys = hook().cache_keys(hook().prepare(USER))
    assert entries == {keys["aimlapi_backup"]}

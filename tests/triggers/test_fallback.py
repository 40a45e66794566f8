"""The deferred path's fallback connections: the trigger moves on as the worker's hook does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_o3.errors import BadRequestError
from airflow_o3.testing import HttpError, StandInServer
from airflow_o3.triggers import O3MiniTrigger
from airflow_o3.triggers.o3mini import completion_from_event
from tests.helpers import fast_retry
from tests.hooks.test_fallback import BACKUP_KEY, BACKUP_MODEL

BODY = {"model": "o3-mini", "messages": [{"role": "user", "content": "Name three prime numbers."}]}
FAST = fast_retry(2)


@pytest.fixture
def backup(monkeypatch):
    """A second stand-in, behind the connection ``aimlapi_backup`` with its own key and model."""
    with StandInServer() as server:
        connection = {"host": server.base_url, "password": BACKUP_KEY, "extra": {"model": BACKUP_MODEL}}
        monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_BACKUP", json.dumps({"conn_type": "aimlapi", **connection}))
        yield server


def fire(trigger: O3MiniTrigger) -> dict[str, Any]:
    async def first() -> Any:
        return await anext(trigger.run())

    return asyncio.run(first()).payload


def trigger(**kwargs: Any) -> O3MiniTrigger:
    return O3MiniTrigger(
        conn_id="aimlapi_default",
        body=BODY,
        request_retry=FAST,
        fallback_conn_ids=["aimlapi_backup"],
        **kwargs,
    )


@pytest.mark.parametrize(
    "failures",
    [[HttpError(403, shape="aimlapi")], [HttpError(401)], [HttpError(503), HttpError(503)]],
    ids=["403", "401", "503-after-its-retries"],
)
def test_the_trigger_sends_the_request_once_to_the_fallback_and_the_event_names_it(
    o3_standin_connection, backup, failures
):
    o3_standin_connection.script(*failures)
    event = fire(trigger())
    assert event["status"] == "success"
    assert event["conn_id"] == "aimlapi_backup"
    (request,) = backup.chat_requests
    assert request.header("Authorization") == f"Bearer {BACKUP_KEY}"
    assert request.body == {**BODY, "model": BACKUP_MODEL}  # "o3-mini": the first connection's default
    assert completion_from_event(event).conn_id == "aimlapi_backup"
    assert BACKUP_KEY not in str(event)


def test_with_a_400_the_trigger_reports_the_error_and_the_fallback_receives_nothing(
    o3_standin_connection, backup
):
    o3_standin_connection.script(HttpError(400, "messages: invalid"))
    with pytest.raises(BadRequestError, match="messages: invalid"):
        completion_from_event(fire(trigger()))
    assert backup.chat_requests == []


def test_fallback_conn_ids_round_trip_through_the_serialized_kwargs():
    classpath, kwargs = trigger().serialize()
    assert kwargs["fallback_conn_ids"] == ["aimlapi_backup"]
    assert O3MiniTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_a_re_created_trigger_finds_the_fallbacks_reply_in_the_cache_and_sends_nothing(
    o3_standin_connection, backup, tmp_path
):
    from airflow_o3.hooks import O3MiniHook

    cache = {"mode": "on", "path": str(tmp_path)}
    first_key = O3MiniHook().cache_key(O3MiniHook().prepare(BODY["messages"]))
    o3_standin_connection.script(HttpError(403), HttpError(403))
    paid = fire(trigger(cache=cache, cache_key=first_key))
    again = fire(trigger(cache=cache, cache_key=first_key))
    assert (paid["from_cache"], again["from_cache"]) == (False, True)
    assert again["conn_id"] == "aimlapi_backup"
    assert again["cache_key"] == paid["cache_key"] != first_key
    assert len(o3_standin_connection.chat_requests) == 1
    assert len(backup.chat_requests) == 1

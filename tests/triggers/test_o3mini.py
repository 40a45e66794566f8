"""O3MiniTrigger run in an event loop against the stand-in server, and its events read back."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest

from airflow_o3.cache import CacheSettings, ResponseCache
from airflow_o3.deprecations import O3DeprecationWarning
from airflow_o3.errors import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    HttpFailure,
    InvalidRequestError,
    RequestTimeoutError,
    ServerError,
)
from airflow_o3.hooks import O3MiniHook
from airflow_o3.testing import HttpError, RateLimited, Stall
from airflow_o3.triggers import O3MiniTrigger
from airflow_o3.triggers.o3mini import completion_from_event, error_event, error_from_event
from tests.helpers import FAST_RETRY as FAST

KEY = "standin-test-key"
BODY = {"model": "o3-mini", "messages": [{"role": "user", "content": "Name three prime numbers."}]}


def fire(trigger: O3MiniTrigger) -> dict[str, Any]:
    """The first event the trigger yields, as the triggerer would get it."""

    async def first() -> Any:
        return await anext(trigger.run())

    return asyncio.run(first()).payload


def trigger(**kwargs: Any) -> O3MiniTrigger:
    return O3MiniTrigger(conn_id="aimlapi_default", body=BODY, request_retry=FAST, **kwargs)


def test_serialized_kwargs_round_trip_and_hold_no_secret(o3_standin_connection):
    classpath, kwargs = trigger(client_request_id="dag:task:run:t1", read_timeout=30.0).serialize()
    assert classpath == "airflow_o3.triggers.o3mini.O3MiniTrigger"
    assert kwargs == {
        "conn_id": "aimlapi_default",
        "body": BODY,
        "client_request_id": "dag:task:run:t1",
        "request_retry": FAST,
        "read_timeout": 30.0,
        "cache": None,
        "cache_key": None,
        "fallback_conn_ids": [],
    }
    assert KEY not in json.dumps(kwargs)
    assert O3MiniTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_a_trigger_serialized_with_the_old_names_retry_and_timeout_still_runs_with_a_warning(
    o3_standin_connection,
):
    with pytest.warns(O3DeprecationWarning) as warned:
        old = O3MiniTrigger(conn_id="aimlapi_default", body=BODY, retry={"max_attempts": 1}, timeout=0.2)
    assert [str(w.message).split(";")[0] for w in warned] == [
        "O3MiniTrigger: retry is renamed request_retry",
        "O3MiniTrigger: timeout is renamed read_timeout",
    ]
    kwargs = old.serialize()[1]
    assert (kwargs["request_retry"], kwargs["read_timeout"]) == ({"max_attempts": 1}, 0.2)
    assert "retry" not in kwargs and "timeout" not in kwargs
    o3_standin_connection.script(Stall(seconds=1.0))
    with pytest.raises(RequestTimeoutError, match="gave up after 1 attempt"):
        completion_from_event(fire(old))


def test_the_event_rebuilds_the_same_completion_as_the_sync_path(o3_standin_connection):
    event = fire(trigger(client_request_id="dag:task:run:t1"))
    assert event["status"] == "success"
    assert KEY not in json.dumps(event)
    deferred = completion_from_event(event)
    (request,) = o3_standin_connection.chat_requests
    assert request.body == BODY
    assert request.header("X-Client-Request-Id") == "dag:task:run:t1"
    assert request.header("Authorization") == f"Bearer {KEY}"

    direct = O3MiniHook().chat(BODY["messages"])
    assert deferred.text == direct.text
    assert deferred.usage == direct.usage
    assert deferred.cost_usd == direct.cost_usd
    assert deferred.request_id == "req-standin-1"
    assert deferred.finish_reason == "stop"


def test_the_same_retry_policy_applies_in_the_triggerer(o3_standin_connection):
    o3_standin_connection.script(RateLimited(retry_after=0.05), HttpError(503))
    assert fire(trigger())["status"] == "success"
    assert len(o3_standin_connection.chat_requests) == 3


def test_a_service_error_comes_back_as_the_same_typed_error_with_the_same_message(o3_standin_connection):
    o3_standin_connection.script(HttpError(401, "Invalid API key"))
    event = fire(trigger())
    assert event["status"] == "error"
    with pytest.raises(AuthenticationError) as deferred:
        completion_from_event(event)

    o3_standin_connection.script(HttpError(401, "Invalid API key"))
    with pytest.raises(AuthenticationError) as direct:
        O3MiniHook(request_retry=FAST).chat(BODY["messages"])
    assert str(deferred.value) == str(direct.value).replace("req-standin-2", "req-standin-1")
    assert "connection 'aimlapi_default'" in str(deferred.value)
    assert KEY not in json.dumps(event)


def test_retries_that_run_out_say_so_after_the_round_trip(o3_standin_connection):
    o3_standin_connection.script(*(HttpError(503, "overloaded") for _ in range(3)))
    with pytest.raises(ServerError, match=r"overloaded.*gave up after 3 attempt\(s\)") as raised:
        completion_from_event(fire(trigger()))
    assert raised.value.retryable


@pytest.mark.slow  # waits out the read timeout
def test_a_read_timeout_is_a_request_timeout_error(o3_standin_connection):
    o3_standin_connection.script(Stall(2.0), Stall(2.0), Stall(2.0))
    with pytest.raises(RequestTimeoutError, match=r"no reply from .* in time \(ReadTimeout\)"):
        completion_from_event(fire(trigger(read_timeout=0.2)))


def test_an_unreachable_service_is_a_connect_error(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AIMLAPI_DEFAULT",
        json.dumps({"conn_type": "aimlapi", "host": "http://127.0.0.1:9/v1", "password": KEY}),
    )
    with pytest.raises(
        ConnectError, match=re.escape("could not reach http://127.0.0.1:9/v1/chat/completions")
    ):
        completion_from_event(fire(trigger()))


def test_a_connection_without_a_key_is_reported_not_crashed(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", json.dumps({"conn_type": "aimlapi"}))
    event = fire(trigger())
    assert event == {"status": "error", "error": "ConfigurationError", "message": event["message"]}
    with pytest.raises(ConfigurationError, match="has no API key"):
        completion_from_event(event)


def test_an_unknown_error_name_still_raises_an_o3_error():
    error = error_from_event({"status": "error", "error": "NoSuchError", "message": "odd"})
    assert type(error).__name__ == "O3Error"
    assert str(error) == "odd"


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError("bad input"),
        ServerError(HttpFailure(503, "down", "req-1", 0.5), attempts=3, elapsed=1.25, conn_id="aimlapi_eu"),
    ],
)
def test_error_events_are_plain_json_and_rebuild_the_error(error):
    event = error_event(error)
    assert json.loads(json.dumps(event)) == event
    rebuilt = error_from_event(event)
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)


def test_asend_refuses_a_streamed_request(o3_standin_connection):
    hook = O3MiniHook()
    prepared = hook.prepare(BODY["messages"], stream=True)

    async def send() -> None:
        async with hook.async_client() as client:
            await hook.asend(prepared, client)

    with pytest.raises(InvalidRequestError, match="without stream"):
        asyncio.run(send())
    assert o3_standin_connection.chat_requests == []


def cached_trigger(tmp_path, **cache: Any) -> O3MiniTrigger:
    """A trigger with the response cache on under ``tmp_path``, its key computed as the operator does."""
    hook = O3MiniHook()
    settings = {"mode": "on", "path": str(tmp_path), **cache}
    key = hook.cache_key(hook.prepare(BODY["messages"]))
    return O3MiniTrigger(
        conn_id="aimlapi_default", body=BODY, request_retry=FAST, cache=settings, cache_key=key
    )


def stored(trigger: O3MiniTrigger) -> Any:
    return ResponseCache(CacheSettings.coerce(trigger.cache)).get(trigger.cache_key)


def test_the_trigger_stores_the_reply_as_it_arrives_and_the_event_names_the_entry(
    o3_standin_connection, tmp_path
):
    trigger = cached_trigger(tmp_path)
    event = fire(trigger)
    assert event["cache_key"] == trigger.cache_key
    assert event["from_cache"] is False
    assert stored(trigger).text == completion_from_event(event).text
    assert KEY not in json.dumps(trigger.serialize()[1])


def test_a_trigger_re_created_from_its_kwargs_is_answered_from_the_cache_without_a_request(
    o3_standin_connection, tmp_path
):
    kwargs = cached_trigger(tmp_path).serialize()[1]
    first = fire(O3MiniTrigger(**kwargs))
    second = fire(O3MiniTrigger(**json.loads(json.dumps(kwargs))))
    assert len(o3_standin_connection.chat_requests) == 1
    assert second["from_cache"] is True
    assert completion_from_event(second).from_cache
    assert completion_from_event(second).text == completion_from_event(first).text


async def _cancel_after(trigger: O3MiniTrigger, seconds: float, *, shutdown: bool) -> None:
    """Run ``trigger`` and cancel it after ``seconds``: alone (the trigger is moved or the user acts),
    or with every task of the loop as the triggerer's shutdown does (``asyncio.run`` ending)."""

    async def first() -> Any:
        return await anext(trigger.run())

    task = asyncio.create_task(first())
    await asyncio.sleep(seconds)
    if shutdown:
        return  # asyncio.run cancels every task still running, then waits for them
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("shutdown", [True, False], ids=["triggerer-shutdown", "trigger-cancelled"])
def test_a_trigger_cancelled_mid_request_stores_the_late_reply_and_its_next_run_sends_nothing(
    o3_standin_connection, tmp_path, shutdown
):
    o3_standin_connection.script(Stall(1.0))
    trigger = cached_trigger(tmp_path, grace_period=5)
    started = time.monotonic()
    asyncio.run(_cancel_after(trigger, 0.3, shutdown=shutdown))
    assert 0.9 < time.monotonic() - started < 4
    assert stored(trigger) is not None, "the reply that arrived during the grace period is stored"

    again = fire(O3MiniTrigger(**trigger.serialize()[1]))
    assert again["from_cache"] is True
    assert len(o3_standin_connection.chat_requests) == 1


def test_the_grace_period_bounds_the_wait_of_a_cancelled_trigger(o3_standin_connection, tmp_path):
    o3_standin_connection.script(Stall(3.0))
    trigger = cached_trigger(tmp_path, grace_period=0.3)
    started = time.monotonic()
    asyncio.run(_cancel_after(trigger, 0.2, shutdown=True))
    assert time.monotonic() - started < 1.5
    assert stored(trigger) is None


LOOP_LAG_PROBE = """
import asyncio, json, sys, time

# What a running triggerer has loaded before this trigger: its own modules, and Airflow's connection
# machinery (on Airflow 2, the first connection read loads cryptography, ~70 ms holding the GIL).
import airflow.jobs.triggerer_job_runner
from airflow.providers.common.compat.sdk import BaseHook
from airflow_o3.triggers.o3mini import O3MiniTrigger

BaseHook.get_connection("aimlapi_default")


async def main():
    lag = 0.0
    running = True

    async def heartbeat():
        nonlocal lag
        while running:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lag = max(lag, time.monotonic() - before - 0.005)

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    events = []
    for _ in range(2):  # a miss that sends and stores, then a hit
        events.append((await anext(O3MiniTrigger(**json.loads(sys.argv[1])).run())).payload)
    running = False
    await beat
    print(json.dumps({"lag": lag, "from_cache": [event.get("from_cache") for event in events]}))


asyncio.run(main())
"""


@pytest.mark.slow
def test_the_trigger_never_blocks_the_triggerers_event_loop(o3_standin_connection, tmp_path):
    kwargs = json.dumps(cached_trigger(tmp_path / "cache").serialize()[1])
    # Bytecode compiled once, as in any installed deployment (this environment may forbid writing it).
    environment = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path / "pycache")}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    for _ in range(2):  # the first run compiles, the second measures
        probe = subprocess.run(
            [sys.executable, "-c", LOOP_LAG_PROBE, kwargs],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env=environment,
        )
        shutil.rmtree(tmp_path / "cache")
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    assert measured["from_cache"] == [False, True]
    assert measured["lag"] < 0.1, f"the event loop was blocked for {measured['lag']:.3f}s"


@pytest.mark.slow  # waits out the attempt timeout
def test_a_reply_trickling_into_the_triggerer_is_cut_at_the_attempt_timeout_and_comes_back_typed(monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    stop = threading.Event()

    class Trickle(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            while not stop.wait(0.5):
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        connection = {
            "conn_type": "aimlapi",
            "host": f"http://127.0.0.1:{server.server_address[1]}/v1",
            "password": KEY,
            "extra": {"attempt_timeout": 1.5},
        }
        monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", json.dumps(connection))
        started = time.monotonic()
        event = fire(
            O3MiniTrigger(
                conn_id="aimlapi_default", body=BODY, request_retry={"max_attempts": 1}, read_timeout=1
            )
        )
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
    assert elapsed < 2.5
    assert event["error"] == "AttemptTimeoutError"
    with pytest.raises(RequestTimeoutError, match=r"attempt_timeout=1\.5s") as raised:
        completion_from_event(event)
    assert type(raised.value).__name__ == "AttemptTimeoutError"
    assert KEY not in json.dumps(event)

"""deferrable=True end to end with dag.test() (which runs triggers inline): same results, XComs, errors."""

from __future__ import annotations

import pytest

from airflow_o3.testing import HttpError, RateLimited, Reply
from tests.dagrun import run_dag
from tests.helpers import usage

pytestmark = pytest.mark.usefixtures("airflow_db")

KEY = "standin-test-key"

DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={{"topic": "tides"}}):
    for deferrable in (False, True):
        O3MiniOperator(
            task_id="deferred" if deferrable else "in_worker",
            prompt="Explain {{{{ params.topic }}}} in one line.",
            reasoning_effort="low",
            request_retry={{"max_attempts": 3, "initial_backoff": 0.01, "max_backoff": 0.02}},
            cache={cache!r},
            deferrable=deferrable,
        )
"""


def test_a_deferred_call_gives_the_same_result_and_xcoms_as_one_in_the_worker(
    dag_file, o3_standin_connection
):
    dag_file(DAG.format(dag_id="o3_deferrable_same", cache="off"))
    reply = Reply(
        "The sea rises and falls twice a day.", usage=usage(prompt=20, completion=300, reasoning=280)
    )
    o3_standin_connection.script(reply, reply)
    result = run_dag("o3_deferrable_same")
    result.assert_success()
    assert "[DAG TEST] running trigger in line" in result.task_log("deferred")
    assert "running trigger" not in result.task_log("in_worker")
    assert result.xcom("deferred") == result.xcom("in_worker") == "The sea rises and falls twice a day."
    assert result.xcom("deferred", key="usage") == result.xcom("in_worker", key="usage")
    deferred, in_worker = (
        result.xcom("deferred", key="completion"),
        result.xcom("in_worker", key="completion"),
    )
    assert {k: v for k, v in deferred.items() if k not in ("id", "created", "request_id")} == {
        k: v for k, v in in_worker.items() if k not in ("id", "created", "request_id")
    }
    bodies = {
        r.header("X-Client-Request-Id").split(":")[1]: r.body for r in o3_standin_connection.chat_requests
    }
    assert bodies["deferred"] == bodies["in_worker"]
    assert result.leaks(KEY) == []


def test_the_triggerer_retries_with_the_same_policy(dag_file, o3_standin_connection):
    dag_file(
        DAG.format(dag_id="o3_deferrable_retry", cache="off").replace(
            "for deferrable in (False, True)", "for deferrable in (True,)"
        )
    )
    o3_standin_connection.script(RateLimited(retry_after=0.05), HttpError(502))
    result = run_dag("o3_deferrable_retry")
    result.assert_success()
    assert len(o3_standin_connection.chat_requests) == 3


def test_an_error_in_the_triggerer_fails_the_task_with_the_message_of_the_worker_path(
    dag_file, o3_standin_connection
):
    dag_file(DAG.format(dag_id="o3_deferrable_error", cache="off"))
    o3_standin_connection.script(HttpError(401, "Invalid API key"), HttpError(401, "Invalid API key"))
    result = run_dag("o3_deferrable_error")
    assert result.task_state("deferred") == "failed"
    assert result.task_state("in_worker") == "failed"
    assert result.try_number("deferred") == 1, "a wrong key is not retried"

    def message(task_id: str) -> str:
        line = next(
            line for line in result.task_log(task_id).splitlines() if "AuthenticationError (HTTP 401)" in line
        )
        return line[line.index("AuthenticationError (HTTP 401)") :].split(". request id")[0]

    assert (
        message("deferred")
        == message("in_worker")
        == "AuthenticationError (HTTP 401): Invalid API key (invalid_request_error)"
    )
    assert "connection 'aimlapi_default'" in result.task_log("deferred")
    assert result.leaks(KEY) == []


def test_a_cached_reply_is_answered_by_the_trigger_without_a_request(
    dag_file, o3_standin_connection, tmp_path
):
    cache = {"mode": "on", "path": str(tmp_path)}
    dag_file(
        DAG.format(dag_id="o3_deferrable_cache", cache=cache).replace(
            "for deferrable in (False, True)", "for deferrable in (True,)"
        )
    )
    first = run_dag("o3_deferrable_cache")
    first.assert_success()
    assert "running trigger in line" in first.task_log("deferred")
    assert len(o3_standin_connection.chat_requests) == 1

    second = run_dag("o3_deferrable_cache")
    second.assert_success()
    assert "Reply read from the response cache" in second.task_log("deferred")
    assert len(o3_standin_connection.chat_requests) == 1, "the stored reply was not paid again"
    assert second.xcom("deferred", key="completion")["from_cache"] is True
    assert second.xcom("deferred") == first.xcom("deferred")

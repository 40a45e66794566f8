"""Every failure path, driven with a recognisable key: it must appear in no log line, exception text,
XCom value or rendered field."""

from __future__ import annotations

import logging

import pytest

from airflow_o3.errors import O3Error
from airflow_o3.hooks import O3MiniHook
from airflow_o3.testing import Body, ConnectionReset, HttpError, NonJson, RateLimited, Reply, Stall
from tests.dagrun import run_dag
from tests.helpers import NO_BACKOFF_RETRY as RETRY

KEY = "sk-aiml-SECRET-CANARY-0c9b8a7d6e5f"

FAILURES = {
    "429 with Retry-After": RateLimited(retry_after=0.01),
    "429 without Retry-After": RateLimited(retry_after=None),
    "500": HttpError(500, "boom"),
    "502": HttpError(502, "bad gateway", shape="text"),
    "503": HttpError(503, "unavailable", shape="problem"),
    "504": HttpError(504, "timeout", shape="aimlapi"),
    "connection reset": ConnectionReset(),
    "read timeout": Stall(1.0),
    "non-JSON 200": NonJson(status=200, body="<html>oops</html>"),
    "200 without choices": Body(status=200, json={"id": "x", "object": "chat.completion"}),
    "finish_reason length": Reply(content="", finish_reason="length"),
    "refusal": Reply(content=None, refusal="No."),
    "content_filter": Reply(content="", finish_reason="content_filter"),
    "400": HttpError(400, "bad body", shape="openai"),
    "401": HttpError(401, "bad key", shape="openai"),
    "403": HttpError(403, "no credits", shape="aimlapi"),
}


@pytest.fixture
def keyed_standin(o3_standin, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", o3_standin.connection_json(KEY))
    return o3_standin


@pytest.mark.parametrize("fault", FAILURES.values(), ids=FAILURES.keys())
def test_hook_failure_paths_never_show_the_key(keyed_standin, fault, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    keyed_standin.script(fault, fault)
    hook = O3MiniHook(request_retry=RETRY, read_timeout=0.3)
    try:
        hook.chat([{"role": "user", "content": "hi"}])
    except O3Error as error:
        for text in (str(error), repr(error), repr(getattr(error, "failure", ""))):
            assert KEY not in text
    assert KEY not in caplog.text
    captured = capfd.readouterr()
    assert KEY not in captured.out + captured.err
    assert keyed_standin.chat_requests, "the fault was reached"


DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="o3_secret_paths", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(task_id="ask", prompt="Summarise {{ ds }}.", request_retry={retry!r}, read_timeout=0.3)
"""


@pytest.mark.slow  # runs every failing task with its retries
@pytest.mark.usefixtures("airflow_db")
def test_failed_task_runs_never_show_the_key(keyed_standin, dag_file, capfd):
    dag_file(DAG.format(retry=RETRY), name="o3_secret_paths.py")
    for name, fault in FAILURES.items():
        keyed_standin.clear()
        keyed_standin.script(fault, fault)
        result = run_dag("o3_secret_paths")
        assert keyed_standin.chat_requests, name
        assert result.leaks(KEY) == [], name
        assert result.task_state("ask") == "failed", name
    captured = capfd.readouterr()
    assert KEY not in captured.out + captured.err

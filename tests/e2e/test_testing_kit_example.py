"""The example of docs/testing.md, run as written: a DAG file in a DAG folder, the fixtures, dag.test()."""

from __future__ import annotations

import importlib.util

import pytest

from airflow_o3.testing import HttpError, RateLimited, Reply

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_FILE = """
import pendulum
from airflow.providers.common.compat.sdk import DAG  # airflow.sdk.DAG on Airflow 3 only

from airflow_o3.operators import O3MiniOperator

with DAG("summarise", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
    O3MiniOperator(task_id="ask", prompt="Summarise {{ params.topic }}.", params={"topic": "tides"})
"""


@pytest.fixture
def dag(dag_file):
    path = dag_file(DAG_FILE, name="summarise.py")
    spec = importlib.util.spec_from_file_location("summarise", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def test_summary_survives_a_429_and_a_503(dag, o3_standin_connection):
    o3_standin_connection.script(RateLimited(retry_after=0), HttpError(503))  # then a normal reply
    run = dag.test()
    assert run.state == "success"
    requests = o3_standin_connection.chat_requests
    assert len(requests) == 3  # the hook retried twice, within one task try
    assert requests[-1].body["messages"] == [{"role": "user", "content": "Summarise tides."}]
    assert requests[-1].header("X-Client-Request-Id").endswith(":t1")


def test_an_empty_reply_fails_the_task(dag, o3_standin_connection):
    o3_standin_connection.script(Reply(content="", finish_reason="length"))
    assert dag.test().state == "failed"

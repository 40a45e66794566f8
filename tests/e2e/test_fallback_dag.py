"""fallback_conn_ids end to end: a task whose connection is out of credits is answered by the next one,
in the worker and deferred, and its ``completion`` XCom names the connection that answered."""

from __future__ import annotations

import json

import pytest

from airflow_o3.testing import HttpError, Reply, StandInServer
from tests.contract import validate_request_body
from tests.dagrun import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

BACKUP_KEY = "backup-key-0123"

DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(
        task_id="ask",
        prompt="Name three prime numbers.",
        fallback_conn_ids=["aimlapi_backup"],
        request_retry={{"max_attempts": 1}},
        deferrable={deferrable},
    )
"""


@pytest.fixture
def backup(monkeypatch):
    with StandInServer() as server:
        connection = {"conn_type": "aimlapi", "host": server.base_url, "password": BACKUP_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_BACKUP", json.dumps(connection))
        yield server


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferred"])
def test_a_task_whose_connection_is_out_of_credits_is_answered_by_the_fallback_and_says_so(
    dag_file, o3_standin_connection, backup, deferrable
):
    o3_standin_connection.script(HttpError(403, "Not enough credits", shape="aimlapi"))
    backup.script(Reply(content="2, 3 and 5."))
    dag_id = f"o3_fallback_{'deferred' if deferrable else 'worker'}"
    dag_file(DAG.format(dag_id=dag_id, deferrable=deferrable))

    result = run_dag(dag_id)

    result.assert_success()
    assert result.xcom("ask") == "2, 3 and 5."
    assert result.xcom("ask", key="completion")["conn_id"] == "aimlapi_backup"
    assert len(o3_standin_connection.chat_requests) == 1
    (request,) = backup.chat_requests
    assert request.header("Authorization") == f"Bearer {BACKUP_KEY}"
    validate_request_body(request.body, strict=True)
    assert "Not enough credits" in result.task_log("ask")

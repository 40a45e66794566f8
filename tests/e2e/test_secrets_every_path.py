"""The API key stays secret on every path a call can take: sync, deferred, mapped, batch, mapped batch.

Each prompt pulls in trigger conf that holds Jinja asking for the connection's password: it must be
sent as text (data is never rendered a second time), and the key must appear in no log line, XCom
value or rendered field, whether the calls succeed or the service refuses them.
"""

from __future__ import annotations

import pytest

from airflow_o3.testing import HttpError
from tests.dagrun import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

KEY = "sk-aiml-EVERY-PATH-CANARY-5d4c3b2a"
ASK_FOR_THE_KEY = "{{ conn.aimlapi_default.password }}"

DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG, task
from airflow_o3.operators import O3MiniBatchOperator, O3MiniOperator

with DAG(dag_id="o3_secret_every_path", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={"note": "none"}):
    retry = {"max_attempts": 2, "initial_backoff": 0.0, "max_backoff": 0.0}
    prompt = "Note: {{ params.note }}"
    O3MiniOperator(task_id="sync", prompt=prompt, request_retry=retry)
    O3MiniOperator(task_id="deferred", prompt=prompt, request_retry=retry, deferrable=True)
    O3MiniOperator.partial(task_id="mapped", request_retry=retry).expand(
        prompt=[prompt, "Again: {{ params.note }}"]
    )
    O3MiniOperator.partial(task_id="mapped_deferred", request_retry=retry, deferrable=True).expand(
        prompt=[prompt, "Again: {{ params.note }}"]
    )
    O3MiniBatchOperator(task_id="batch", prompt="{{ item }} " + prompt, items=["a", "b"], request_retry=retry)
    O3MiniBatchOperator.partial(
        task_id="mapped_batch", prompt="{{ item }} " + prompt, request_retry=retry
    ).expand(items=[["c"], ["d", "e"]])
"""
TASKS = ("sync", "deferred", "mapped", "mapped_deferred", "batch", "mapped_batch")


@pytest.fixture
def o3_standin(answering_standin):
    """Every reply names the prompt it answers (``answer_to``)."""
    return answering_standin


@pytest.fixture
def keyed_standin(o3_standin, monkeypatch, dag_file):
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", o3_standin.connection_json(KEY))
    dag_file(DAG, name="o3_secret_every_path.py")
    return o3_standin


def test_the_key_is_never_sent_logged_or_stored_when_calls_succeed(keyed_standin, capfd):
    result = run_dag("o3_secret_every_path", run_conf={"note": ASK_FOR_THE_KEY})
    result.assert_success()
    bodies = [request.raw.decode() for request in keyed_standin.chat_requests]
    assert len(bodies) == 1 + 1 + 2 + 2 + 2 + 3
    assert all(KEY not in body for body in bodies)
    assert sum(ASK_FOR_THE_KEY in body for body in bodies) == len(bodies), "sent as text, never rendered"
    assert result.xcom("mapped_batch", map_index=1) == [
        f"Answer to: d Note: {ASK_FOR_THE_KEY}",
        f"Answer to: e Note: {ASK_FOR_THE_KEY}",
    ]
    assert result.leaks(KEY) == []
    captured = capfd.readouterr()
    assert KEY not in captured.out + captured.err


def test_the_key_is_never_shown_when_the_service_refuses_every_call(keyed_standin, capfd):
    keyed_standin.script(*[HttpError(401, f"invalid key {ASK_FOR_THE_KEY}")] * 30)
    result = run_dag("o3_secret_every_path", run_conf={"note": ASK_FOR_THE_KEY})
    assert {task_id: result.task_state(task_id) for task_id in ("sync", "deferred", "batch")} == {
        "sync": "failed",
        "deferred": "failed",
        "batch": "failed",
    }
    assert set(result.map_indexes("mapped_batch")) == {0, 1}
    assert result.leaks(KEY) == []
    captured = capfd.readouterr()
    assert KEY not in captured.out + captured.err

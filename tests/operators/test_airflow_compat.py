"""What Airflow itself calls on an operator keeps working, on Airflow 3 and 2.11."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators import O3MiniOperator
from airflow_o3.operators.batch import O3MiniBatchOperator
from airflow_o3.testing import Reply
from tests.dagrun import run_dag

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("render_only", [False, True])
@pytest.mark.parametrize("operator_class", [O3MiniOperator, O3MiniBatchOperator])
def test_the_render_only_argument_leaves_baseoperators_dry_run_method_callable(operator_class, render_only):
    """Airflow 2's ``tasks test --dry-run`` calls ``task.dry_run()``: the argument must not hide it."""
    extra = {"items": ["a"]} if operator_class is O3MiniBatchOperator else {}
    operator = operator_class(task_id="ask", prompt="Hello {{ ds }}", render_only=render_only, **extra)
    operator.dry_run()  # BaseOperator's: logs the template fields, sends nothing
    assert operator.render_only is render_only


STREAMING_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="compat_default_deferrable", schedule=None,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(task_id="ask", prompt="Count to three.", stream=True)
    O3MiniOperator(task_id="ask_json", prompt="Say JSON.", response_format="json_object", json_retries=1)
"""


@pytest.mark.usefixtures("airflow_db")
def test_default_deferrable_config_runs_a_streaming_task_in_the_worker_saying_why(
    dag_file, o3_standin_connection, monkeypatch
):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    dag_file(STREAMING_DAG)
    o3_standin_connection.script(Reply(content='{"ok": true}'), Reply(content='{"ok": true}'))
    result = run_dag("compat_default_deferrable")
    result.assert_success()
    assert "stream needs the worker" in result.task_log("ask")
    assert "Runs in the worker, not deferred as [operators] default_deferrable asks" in result.task_log("ask")
    assert "json_retries needs the worker" in result.task_log("ask_json")
    assert sorted(bool(request.body.get("stream")) for request in o3_standin_connection.chat_requests) == [
        False,
        True,
    ]


def test_default_deferrable_config_defers_other_tasks_but_an_explicit_deferrable_stream_is_refused(
    monkeypatch,
):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert O3MiniOperator(task_id="ask", prompt="hi").deferrable is True
    assert O3MiniOperator(task_id="ask", prompt="hi", stream=True).deferrable is False
    with pytest.raises(InvalidRequestError, match="stream needs the worker, and deferrable=True waits"):
        O3MiniOperator(task_id="ask", prompt="hi", stream=True, deferrable=True)

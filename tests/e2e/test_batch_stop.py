"""A batch task that is killed, times out, or meets a 400 ends at once and for good, in real DAG runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_o3.testing import HttpError
from tests.dagrun import AIRFLOW_3, run_dag

pytestmark = [pytest.mark.usefixtures("airflow_db"), pytest.mark.slow]

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
ENDLESS = HttpError(429, "slow down", headers={"Retry-After": "99999"})

DAG = """
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniBatchOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniBatchOperator(
        task_id="enrich",
        items=[{{"company": f"Company {{n}}"}} for n in range(8)],
        prompt="The industry of {{{{ item.company }}}}?",
        limits={{"max_concurrency": 2}},
        retries=2,
        retry_delay=timedelta(0),
        progress_interval=0.5,
        {extra}
    )
"""


def batch_workers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("o3-batch-")]


@pytest.mark.timeout(120)
def test_execution_timeout_ends_a_batch_paused_on_a_huge_retry_after_and_its_workers_leave(
    dag_file, o3_standin_connection, capsys
):
    dag_file(DAG.format(dag_id="o3_batch_timeout", extra="execution_timeout=timedelta(seconds=3),"))
    o3_standin_connection.script(*[ENDLESS] * 10)
    started = time.monotonic()
    if AIRFLOW_3:
        result = run_dag("o3_batch_timeout")
        assert result.task_state("enrich") == "failed"
    else:  # Airflow 2's dag.test() raises the task's timeout out of the run
        from airflow.exceptions import AirflowTaskTimeout

        with pytest.raises(AirflowTaskTimeout):
            run_dag("o3_batch_timeout")
    assert time.monotonic() - started < 30, "three tries of about 3 s each, not the 120 s pause"
    assert "Batch stopped: 0/8 items done" in capsys.readouterr().out
    sent = len(o3_standin_connection.chat_requests)
    deadline = time.monotonic() + 3
    while batch_workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batch_workers() == [], "the workers waiting out the 429 woke and left with the task"
    time.sleep(0.5)
    assert len(o3_standin_connection.chat_requests) == sent, "no request after the task ended"


@pytest.mark.timeout(300)
def test_sigterm_ends_a_batch_task_paused_on_a_huge_retry_after_within_seconds(
    dag_file, test_dags_folder, o3_standin_connection
):
    dag_file(DAG.format(dag_id="o3_batch_sigterm", extra=""), name="o3_batch_sigterm.py")
    if AIRFLOW_3:
        run_dag("o3_batch_sigterm")  # puts the DAG in the metadata DB, where `tasks test` finds it
        o3_standin_connection.clear()
    o3_standin_connection.script(*[ENDLESS] * 10)
    subdir = () if AIRFLOW_3 else ("--subdir", str(test_dags_folder))
    task = subprocess.Popen(
        [AIRFLOW, "tasks", "test", "o3_batch_sigterm", "enrich", "2026-03-04", *subdir],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 180
        while not o3_standin_connection.chat_requests and time.monotonic() < deadline:
            assert task.poll() is None, task.stdout.read() if task.stdout else ""
            time.sleep(0.1)
        assert o3_standin_connection.chat_requests, "the task never sent its first request"
        time.sleep(1.0)  # the batch now waits out the 429's Retry-After
        task.send_signal(signal.SIGTERM)
        killed = time.monotonic()
        output, _ = task.communicate(timeout=30)
        assert time.monotonic() - killed < 5, output[-3000:]
    finally:
        if task.poll() is None:
            task.kill()
            task.wait()
    assert "Batch stopped: 0/8 items done" in output, output[-3000:]


def test_a_400_on_one_item_fails_the_task_without_airflow_retries(dag_file, o3_standin_connection):
    dag_file(
        DAG.format(dag_id="o3_batch_400", extra='limits={"max_concurrency": 1},').replace(
            'limits={"max_concurrency": 2},\n', "", 1
        )
    )
    o3_standin_connection.script(HttpError(400, "this row is too long"))
    result = run_dag("o3_batch_400")
    assert result.task_state("enrich") == "failed"
    assert result.try_number("enrich") == 1, "a retry would meet the same 400"
    bodies = [request.body["messages"][0]["content"] for request in o3_standin_connection.chat_requests]
    assert bodies == ["The industry of Company 0?"], "the refused item was sent once, and nothing after it"
    log = result.task_log("enrich")
    assert "item 0 of 8 failed: BadRequestError (HTTP 400)" in log
    assert "a retry of the task would not help" in log

"""In a real task: one summary line per call in the task log, and an X-Client-Request-Id per try."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from airflow_o3.operators.o3mini import client_request_id
from airflow_o3.testing import HttpError
from tests.dagrun import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

HEADER_ALPHABET = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # the service drops any other value silently

DAG = """
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(
        task_id="ask",
        prompt="Summarise the night's incidents.",
        request_retry={{"max_attempts": 1}},
        retries=1,
        retry_delay=timedelta(0),
    )
"""

MAPPED_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator.partial(task_id="ask_each").expand(prompt=["Row one.", "Row two."])
"""


def test_every_try_sends_its_own_valid_request_id_and_logs_one_summary_line(dag_file, o3_standin_connection):
    dag_file(DAG.format(dag_id="o3_observed"))
    o3_standin_connection.script(HttpError(503))  # the first request fails; Airflow's retry succeeds

    result = run_dag("o3_observed")
    result.assert_success()

    ids = [request.header("X-Client-Request-Id") for request in o3_standin_connection.chat_requests]
    run = re.sub(r"[^A-Za-z0-9._:-]+", "_", result.run_id)
    assert ids == [f"o3_observed:ask:{run}:t1", f"o3_observed:ask:{run}:t2"]
    assert all(HEADER_ALPHABET.match(value) for value in ids), ids

    log = result.task_log("ask")
    summaries = re.findall(r"o3-mini call: .*", log)
    assert len(summaries) == 1, "the failed try made no call that answered; the second try made one"
    (summary,) = summaries
    for field in ("model=o3-mini-2025-01-31", "from_cache=false", "request_id=req-standin-"):
        assert field in summary
    assert f"client_request_id=o3_observed:ask:{run}:t2" in summary
    assert re.search(r"latency_s=\d+\.\d{3} tokens_in=\d+ ", summary)
    assert re.search(r"tokens_out=\d+ tokens_reasoning=\d+ cost_usd=0\.\d{6} ", summary)


def test_mapped_instances_send_distinct_request_ids_and_log_their_own_line(dag_file, o3_standin_connection):
    dag_file(MAPPED_DAG.format(dag_id="o3_observed_mapped"))
    result = run_dag("o3_observed_mapped")
    result.assert_success()

    ids = sorted(request.header("X-Client-Request-Id") for request in o3_standin_connection.chat_requests)
    run = re.sub(r"[^A-Za-z0-9._:-]+", "_", result.run_id)
    assert ids == [f"o3_observed_mapped:ask_each:{run}:m0:t1", f"o3_observed_mapped:ask_each:{run}:m1:t1"]
    assert all(HEADER_ALPHABET.match(value) for value in ids), ids
    for map_index in (0, 1):
        log = result.task_log("ask_each", map_index)
        (summary,) = re.findall(r"o3-mini call: .*", log)
        assert f"client_request_id=o3_observed_mapped:ask_each:{run}:m{map_index}:t1" in summary


def _context(dag_id: str, task_id: str, run_id: str, try_number: int, map_index: int = -1):
    ti = SimpleNamespace(
        dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=try_number, map_index=map_index
    )
    return {"ti": ti}


def test_request_id_is_made_of_the_header_alphabet_and_keeps_the_try_when_cut_to_128():
    value = client_request_id(_context("d" * 200, "tâche/ü", "manual__2026-01-01T00:00:00+00:00", 3, 7))
    assert HEADER_ALPHABET.match(value)
    assert len(value) == 128
    assert value.endswith(":t_che_:manual__2026-01-01T00:00:00_00:00:m7:t3")


DEFERRED_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(task_id="ask", prompt="Summarise the night's incidents.", deferrable=True)
"""


def test_a_deferred_call_logs_its_summary_line_and_sends_its_request_id(dag_file, o3_standin_connection):
    dag_file(DEFERRED_DAG.format(dag_id="o3_observed_deferred"))
    result = run_dag("o3_observed_deferred")
    result.assert_success()

    (request,) = o3_standin_connection.chat_requests
    run = re.sub(r"[^A-Za-z0-9._:-]+", "_", result.run_id)
    assert request.header("X-Client-Request-Id") == f"o3_observed_deferred:ask:{run}:t1"
    (summary,) = re.findall(r"o3-mini call: .*", result.task_log("ask"))
    assert f"client_request_id=o3_observed_deferred:ask:{run}:t1" in summary
    assert "from_cache=false" in summary


DEFERRED_CACHED_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(task_id="ask", prompt="Summarise.", deferrable=True, cache={cache!r})
"""


def test_a_deferred_task_answered_from_the_cache_logs_a_free_call(dag_file, o3_standin_connection, tmp_path):
    dag_file(
        DEFERRED_CACHED_DAG.format(dag_id="o3_observed_cached", cache={"mode": "on", "path": str(tmp_path)})
    )
    run_dag("o3_observed_cached").assert_success()
    again = run_dag("o3_observed_cached")
    again.assert_success()

    assert len(o3_standin_connection.chat_requests) == 1
    (summary,) = re.findall(r"o3-mini call: .*", again.task_log("ask"))
    assert "from_cache=true" in summary and "cost_usd=0 " in summary

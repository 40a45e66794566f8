"""A task retried by Airflow after its call succeeded reuses the stored reply instead of paying again."""

from __future__ import annotations

import pytest

from airflow_o3.testing import Reply
from tests.dagrun import run_dag
from tests.helpers import list_price_usd, usage

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG = """
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator


def worker_dies_after_the_reply(context, result):
    if context["ti"].try_number == 1:
        raise RuntimeError("the worker died after the reply arrived")


with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(
        task_id="ask",
        prompt="Summarise the night's incidents.",
        cache={cache!r},
        retries=1,
        retry_delay=timedelta(0),
        post_execute=worker_dies_after_the_reply,
    )
"""


def test_airflow_retry_after_a_successful_call_sends_one_request(dag_file, o3_standin_connection, tmp_path):
    dag_file(DAG.format(dag_id="o3_pay_once", cache={"mode": "on", "path": str(tmp_path)}))
    paid_usage = usage(prompt=300, completion=700, reasoning=640)
    o3_standin_connection.script(Reply("Two incidents, both resolved.", usage=paid_usage))
    result = run_dag("o3_pay_once")
    result.assert_success()
    assert result.try_number("ask") == 2
    assert len(o3_standin_connection.chat_requests) == 1
    assert result.xcom("ask") == "Two incidents, both resolved."
    assert result.xcom("ask", key="completion")["from_cache"] is True
    cached_usage = result.xcom("ask", key="usage")
    assert {name: cached_usage[name] for name in paid_usage} == paid_usage, "the cached entry keeps the usage"
    assert cached_usage["usd_spent"] == pytest.approx(list_price_usd(prompt=300, completion=700), abs=1e-9)
    assert "Reply read from the response cache" in result.task_log("ask")


def test_without_the_cache_the_retry_pays_again(dag_file, o3_standin_connection):
    dag_file(DAG.format(dag_id="o3_pay_twice", cache="off"))
    result = run_dag("o3_pay_twice")
    result.assert_success()
    assert len(o3_standin_connection.chat_requests) == 2


UNWRITABLE_CACHE_DAG = """
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(
        task_id="ask",
        prompt="Summarise the night's incidents.",
        cache={{"mode": "on", "path": {path!r}}},
        deferrable={deferrable!r},
        retries=2,
        retry_delay=timedelta(0),
    )
"""


@pytest.mark.parametrize("deferrable", [False, True], ids=["in-worker", "deferred"])
def test_a_cache_that_cannot_store_the_paid_reply_warns_and_the_task_succeeds_paying_once(
    dag_file, o3_standin_connection, tmp_path, deferrable
):
    (tmp_path / "file").write_text("a regular file where the cache folder should be")
    dag_id = f"o3_unwritable_cache_{'deferred' if deferrable else 'worker'}"
    path = str(tmp_path / "file" / "o3_cache")
    dag_file(UNWRITABLE_CACHE_DAG.format(dag_id=dag_id, path=path, deferrable=deferrable))
    o3_standin_connection.script(Reply("Two incidents, both resolved."))
    result = run_dag(dag_id)
    result.assert_success()
    assert result.try_number("ask") == 1
    assert len(o3_standin_connection.chat_requests) == 1
    assert result.xcom("ask") == "Two incidents, both resolved."
    assert "paid for but NOT stored in the response cache" in result.log
    assert result.leaks("standin-test-key") == []

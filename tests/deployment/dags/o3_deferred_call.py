"""A deferrable o3-mini call with the response cache on, for the real-deployment test.

Its connection, ``aimlapi_slow``, points at a stand-in server that thinks a few seconds before each
answer, so the task is seen in the ``deferred`` state and the triggerer can be restarted mid-call.
Each run names its own topic in the conf, so no run is answered from an earlier run's cache entry.
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_o3.operators import O3MiniOperator

with DAG(
    dag_id="o3_deferred_call",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"topic": "tides"},
    tags=["airflow-o3", "test"],
) as dag:
    O3MiniOperator(
        task_id="ask",
        conn_id="aimlapi_slow",
        prompt="In one sentence: {{ params.topic }}.",
        reasoning_effort="low",
        max_completion_tokens=2000,
        deferrable=True,
        cache="on",
    )

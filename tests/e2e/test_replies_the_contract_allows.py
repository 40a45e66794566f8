"""Replies the contract allows, and numbers a hostile server sends, run through a real DAG: a reply
that is paid for but unusable fails the task for good (no Airflow retry, which would pay again); one
with absurd figures but good text delivers the text."""

from __future__ import annotations

import pytest

from airflow_o3.testing import Body
from tests.dagrun import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG = """
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(
        task_id="ask",
        prompt="Summarise the night's incidents.",
        max_completion_tokens=100,
        retries=2,
        retry_delay=timedelta(0),
    )
"""


def _completion(choice: dict, usage: dict) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1762343744,
        "model": "o3-mini-2025-01-31",
        "choices": [choice],
        "usage": usage,
    }


def test_length_with_empty_content_and_null_details_fails_once_asking_for_more_tokens(
    dag_file, o3_standin_connection
):
    o3_standin_connection.script(
        Body(
            json=_completion(
                {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": ""}},
                {
                    "prompt_tokens": 12,
                    "completion_tokens": 100,
                    "total_tokens": 112,
                    "completion_tokens_details": None,
                    "prompt_tokens_details": None,
                },
            )
        )
    )
    dag_file(DAG.format(dag_id="o3_length_null_details"))
    result = run_dag("o3_length_null_details")
    assert result.task_state("ask") == "failed"
    assert result.try_number("ask") == 1, "a final failure: Airflow does not retry and pay again"
    assert len(o3_standin_connection.chat_requests) == 1
    assert "Raise max_completion_tokens" in result.task_log("ask")
    assert "AttributeError" not in result.task_log("ask")


def test_nan_and_infinite_figures_are_ignored_and_the_text_delivered(dag_file, o3_standin_connection):
    body = _completion(
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "All quiet."}},
        {"prompt_tokens": 12, "completion_tokens": float("inf"), "total_tokens": float("nan")},
    )
    body["created"] = float("nan")
    body["meta"] = {"usage": {"credits_used": -5, "usd_spent": float("-inf")}}
    o3_standin_connection.script(Body(json=body, headers={"x-aimlapi-usd-spent": "NaN"}))
    dag_file(DAG.format(dag_id="o3_hostile_numbers"))
    result = run_dag("o3_hostile_numbers")
    result.assert_success()
    assert len(o3_standin_connection.chat_requests) == 1
    assert result.xcom("ask") == "All quiet."
    assert result.xcom("ask", key="usage") == {"prompt_tokens": 12, "attempts": 1}
    assert result.xcom("ask", key="completion")["created"] is None
    assert "is not a count; it is ignored" in result.task_log("ask")

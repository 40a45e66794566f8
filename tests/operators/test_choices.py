"""n > 1: every choice is returned, as a list, whatever the reply format."""

from __future__ import annotations

import json

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_o3.operators import O3MiniOperator
from airflow_o3.testing import Reply, stub_context
from tests.contract import validate_request_body
from tests.dagrun import run_dag
from tests.helpers import usage
from tests.operators.helpers import TICKET_SCHEMA, dag_with

ANSWER = {"label": "billing", "confidence": 0.8, "reason": "charged twice"}


def test_n_choices_are_returned_as_a_list_of_texts(o3_standin_connection):
    o3_standin_connection.script(Reply("Seven."))
    result = O3MiniOperator(task_id="ask", prompt="Name a prime.", parameters={"n": 3}).execute(
        stub_context()
    )
    assert result == ["Seven."] * 3
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    assert request.body["n"] == 3


def test_n_structured_choices_are_each_parsed(o3_standin_connection):
    o3_standin_connection.script(Reply(json.dumps(ANSWER)))
    operator = O3MiniOperator(
        task_id="ask", prompt="Classify.", response_format=TICKET_SCHEMA, parameters={"n": 2}
    )
    assert operator.execute(stub_context()) == [ANSWER, ANSWER]


def test_n_of_one_still_returns_the_single_value(o3_standin_connection):
    o3_standin_connection.script(Reply("Hello."))
    assert O3MiniOperator(task_id="ask", prompt="Hi", parameters={"n": 1}).execute(stub_context()) == "Hello."


def test_every_choice_is_checked_not_only_the_first(o3_standin_connection):
    o3_standin_connection.script(Reply("", finish_reason="content_filter"))
    with pytest.raises(AirflowFailException, match="content filter stopped the reply"):
        O3MiniOperator(task_id="ask", prompt="Hi", parameters={"n": 2}).execute(stub_context())


@pytest.mark.usefixtures("airflow_db")
def test_n_choices_end_to_end_streamed_reach_a_downstream_task_as_a_list(dag_file, o3_standin_connection):
    dag_id = dag_with(
        dag_file,
        "choices_e2e",
        """
        ask = O3MiniOperator(
            task_id="ask", prompt="Classify: {{ params.ticket }}", response_format=TICKET_SCHEMA,
            parameters={"n": 3}, stream=True,
        )

        @task
        def vote(classifications: list) -> str:
            labels = [c["label"] for c in classifications]
            return max(set(labels), key=labels.count)

        vote(ask.output)
        """,
    )
    o3_standin_connection.script(
        Reply(json.dumps(ANSWER), usage=usage(prompt=90, completion=900, reasoning=600))
    )
    result = run_dag(dag_id)
    result.assert_success()
    assert result.xcom("ask") == [ANSWER] * 3
    assert result.xcom("vote") == "billing"
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    assert (request.body["n"], request.body["stream"]) == (3, True)
    assert result.xcom("ask", key="usage")["completion_tokens_details"]["reasoning_tokens"] == 600
    assert "reply[2] | " in result.task_log("ask"), "each choice's streamed text is logged apart"

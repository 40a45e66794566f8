"""Dry runs: render, build and check the exact body, log it, push it, send nothing."""

from __future__ import annotations

import json

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_o3.operators import O3MiniOperator
from airflow_o3.testing import stub_context
from airflow_o3.testing.pytest_plugin import STANDIN_API_KEY
from tests.contract import validate_request_body
from tests.dagrun import run_dag
from tests.operators.helpers import TICKET_SCHEMA, dag_with

ARGUMENTS = {
    "system_prompt": "Classify the support ticket.",
    "prompt": "Ticket: the invoice was charged twice.",
    "reasoning_effort": "low",
    "max_completion_tokens": 3000,
    "response_format": TICKET_SCHEMA,
    "stream": True,
    "parameters": {"seed": 7, "n": 2},
}


def test_dry_run_returns_the_exact_body_a_real_run_sends_and_sends_nothing(o3_standin_connection):
    context = stub_context()
    body = O3MiniOperator(task_id="ask", render_only=True, **ARGUMENTS).execute(context)
    assert o3_standin_connection.chat_requests == []
    assert context["ti"].xcoms == {}, "no usage or completion: nothing was called"
    validate_request_body(body, strict=True)

    O3MiniOperator(task_id="ask", **ARGUMENTS).execute(stub_context())
    (sent,) = o3_standin_connection.chat_requests
    assert body == sent.body
    assert json.loads(sent.raw) == body


def test_dry_run_refuses_what_a_real_run_would_refuse_before_sending(o3_standin_connection):
    operator = O3MiniOperator(task_id="ask", prompt="hi", render_only=True)
    operator.parameters["tools"] = [{"type": "function"}]  # as a value known only at run time would be
    with pytest.raises(AirflowFailException, match=r"tools\[0\].function: Field required"):
        operator.execute(stub_context())
    assert o3_standin_connection.chat_requests == []


def test_dry_run_without_a_connection_assumes_the_default_model(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", raising=False)
    body = O3MiniOperator(task_id="ask", prompt="hi", render_only=True, conn_id="no_such_connection").execute(
        stub_context()
    )
    assert body == {"model": "o3-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_dry_run_takes_the_model_from_the_connection(monkeypatch, o3_standin):
    connection = json.loads(o3_standin.connection_json())
    connection["extra"] = {"model": "o3-mini-2025-01-31"}
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", json.dumps(connection))
    body = O3MiniOperator(task_id="ask", prompt="hi", render_only=True).execute(stub_context())
    assert body["model"] == "o3-mini-2025-01-31"
    assert o3_standin.chat_requests == []


@pytest.mark.usefixtures("airflow_db")
def test_dry_run_end_to_end_renders_upstream_data_logs_and_pushes_the_body_and_sends_nothing(
    dag_file, o3_standin_connection
):
    dag_id = dag_with(
        dag_file,
        "dry_run_e2e",
        """
        @task
        def load_ticket() -> dict:
            return {"id": "T-17", "text": "Charged twice for {{ plan }}, please refund."}

        classify = O3MiniOperator(
            task_id="classify",
            system_prompt="Classify the support ticket.",
            prompt="Ticket {{ ti.xcom_pull(task_ids='load_ticket')['id'] }}: "
            "{{ ti.xcom_pull(task_ids='load_ticket')['text'] }}",
            response_format=TICKET_SCHEMA,
            reasoning_effort="low",
            render_only=True,
        )

        @task
        def review(body: dict) -> str:
            return body["messages"][1]["content"]

        load_ticket() >> classify
        review(classify.output)
        """,
    )
    result = run_dag(dag_id)
    result.assert_success()
    assert o3_standin_connection.chat_requests == []

    body = result.xcom("classify")
    validate_request_body(body, strict=True)
    prompt = "Ticket T-17: Charged twice for {{ plan }}, please refund."
    assert body["messages"] == [
        {"role": "developer", "content": "Classify the support ticket."},
        {"role": "user", "content": prompt},
    ]
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["reasoning_effort"] == "low"
    assert result.xcom("review") == prompt, "upstream data is never rendered a second time"
    assert result.rendered_fields("classify")["prompt"] == prompt
    assert result.xcom("classify", key="usage", default=None) is None

    log = result.task_log("classify")
    assert (
        "Render only, nothing sent. The request would be POST "
        f"{o3_standin_connection.base_url}/chat/completions" in log
    )
    assert '"content": "Ticket T-17: Charged twice for {{ plan }}, please refund."' in log
    assert result.leaks(STANDIN_API_KEY) == []

"""O3MiniBranchOperator: o3-mini chooses the downstream task(s), Airflow skips the others. dag.test()
runs against the stand-in server."""

from __future__ import annotations

import json

import pytest

from airflow_o3.errors import InvalidRequestError
from airflow_o3.testing import Reply
from airflow_o3.testing.pytest_plugin import STANDIN_API_KEY
from tests.contract import validate_request_body
from tests.dagrun import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

HEADER = """
import pendulum
from datetime import timedelta
from airflow.providers.common.compat.sdk import DAG, task
from airflow_o3.operators.branch import Branch, O3MiniBranchOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         default_args={{"retries": 2, "retry_delay": timedelta(0)}}):
    @task
    def handle(name: str = "") -> str:
        return "handled"

    handlers = {{name: handle.override(task_id=name)() for name in ("billing", "bug", "other")}}
"""


def write_dag(dag_file, dag_id: str, body: str) -> str:
    dag_file(HEADER.format(dag_id=dag_id) + body)
    return dag_id


def chosen(choice, reason: str = "It is about money.") -> Reply:
    return Reply(json.dumps({"choice": choice, "reason": reason}))


def test_the_operator_asks_with_a_strict_enum_of_the_downstream_tasks_and_skips_the_others(
    dag_file, o3_standin_connection
):
    dag_id = write_dag(
        dag_file,
        "o3_branch_downstream",
        """
    route = O3MiniBranchOperator(task_id="route", prompt="Which team for: I was charged twice?",
                                 reasoning_effort="low")
    route >> list(handlers.values())
""",
    )
    o3_standin_connection.script(chosen("billing"))
    result = run_dag(dag_id)
    result.assert_success()

    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    spec = request.body["response_format"]["json_schema"]
    assert spec["strict"] is True
    assert spec["schema"]["properties"]["choice"]["enum"] == ["billing", "bug", "other"]
    assert spec["schema"]["required"] == ["choice", "reason"]
    assert result.task_states == {
        "route": "success",
        "billing": "success",
        "bug": "skipped",
        "other": "skipped",
    }
    assert result.xcom("route") == {
        "choice": "billing",
        "task_ids": ["billing"],
        "reason": "It is about money.",
    }
    assert "o3-mini chose billing: It is about money." in result.task_log("route")
    assert result.xcom("route", key="usage")["attempts"] == 1
    assert result.leaks(STANDIN_API_KEY) == []


def test_labels_with_descriptions_are_sent_and_the_label_runs_its_task(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_branch_labels",
        """
    route = O3MiniBranchOperator(
        task_id="route",
        prompt="Which team?",
        choices={
            "payments": Branch("billing", "charges, refunds, invoices"),
            "defect": {"task_id": "bug", "description": "something is broken"},
            "anything_else": "other",
        },
    )
    route >> list(handlers.values())
""",
    )
    o3_standin_connection.script(chosen("defect", "The app crashes."))
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    choice = request.body["response_format"]["json_schema"]["schema"]["properties"]["choice"]
    assert choice["enum"] == ["payments", "defect", "anything_else"]
    assert "payments: charges, refunds, invoices" in choice["description"]
    assert "defect: something is broken" in choice["description"]
    assert result.task_state("bug") == "success"
    assert {result.task_state("billing"), result.task_state("other")} == {"skipped"}
    assert result.xcom("route") == {"choice": "defect", "task_ids": ["bug"], "reason": "The app crashes."}


def test_multiple_choices_run_every_chosen_branch(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_branch_multiple",
        """
    route = O3MiniBranchOperator(task_id="route", prompt="Which teams?", multiple=True)
    route >> list(handlers.values())
""",
    )
    o3_standin_connection.script(chosen(["bug", "billing", "bug"], "Both."))
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    choice = request.body["response_format"]["json_schema"]["schema"]["properties"]["choice"]
    assert choice["type"] == "array"
    assert choice["items"]["enum"] == ["billing", "bug", "other"]
    assert result.task_states == {
        "route": "success",
        "billing": "success",
        "bug": "success",
        "other": "skipped",
    }
    assert result.xcom("route") == {
        "choice": ["bug", "billing"],
        "task_ids": ["bug", "billing"],
        "reason": "Both.",
    }


def test_a_reply_outside_the_choices_fails_once_and_skips_nothing(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_branch_off_enum",
        """
    route = O3MiniBranchOperator(task_id="route", prompt="Which team?")
    route >> list(handlers.values())
""",
    )
    o3_standin_connection.script(chosen("refunds"))
    result = run_dag(dag_id)
    assert result.task_state("route") == "failed"
    assert result.try_number("route") == 1, "the reply was paid for: no retry"
    assert len(o3_standin_connection.chat_requests) == 1
    assert "'refunds' is not one of ['billing', 'bug', 'other']" in result.task_log("route")
    assert {result.task_state(name) for name in ("billing", "bug", "other")} == {"upstream_failed"}


def test_a_choice_that_is_not_downstream_fails_before_anything_is_sent(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_branch_not_downstream",
        """
    route = O3MiniBranchOperator(task_id="route", prompt="Which team?", choices=["billing", "bug", "legal"])
    route >> [handlers["billing"], handlers["bug"]]
""",
    )
    result = run_dag(dag_id)
    assert result.task_state("route") == "failed"
    assert result.try_number("route") == 1
    assert "choices name ['legal'], which are not directly downstream" in result.task_log("route")
    assert "add `route >> legal`" in result.task_log("route")
    assert o3_standin_connection.chat_requests == []


def test_a_deferred_branch_chooses_after_the_triggerer_answers(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_branch_deferred",
        """
    route = O3MiniBranchOperator(task_id="route", prompt="Which team?", deferrable=True)
    route >> list(handlers.values())
""",
    )
    o3_standin_connection.script(chosen("other", "Unclear."))
    result = run_dag(dag_id)
    result.assert_success()
    assert result.task_states == {
        "route": "success",
        "billing": "skipped",
        "bug": "skipped",
        "other": "success",
    }
    assert result.xcom("route") == {"choice": "other", "task_ids": ["other"], "reason": "Unclear."}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"response_format": "json_object"}, "response_format cannot be given to a branching task"),
        ({"json_retries": 1}, "json_retries cannot be given to a branching task"),
        ({"parameters": {"n": 2}}, r"parameters\['n'\] cannot be given to a branching task"),
        ({"parameters": {"tools": []}}, r"parameters\['tools'\] cannot be given"),
        ({"choices": "billing"}, "choices is 'billing'"),
        ({"choices": ["billing"]}, "a choice needs at least two"),
        ({"choices": {"a": 3, "b": "bug"}}, r"choices\['a'\] is 3"),
    ],
)
def test_bad_branch_arguments_are_refused_at_parse_naming_the_fix(arguments, message):
    from airflow_o3.operators.branch import O3MiniBranchOperator

    with pytest.raises(InvalidRequestError, match=message):
        O3MiniBranchOperator(task_id="route", prompt="Which?", **arguments)


def test_a_dry_run_returns_the_request_with_the_enum_and_skips_nothing(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_branch_dry_run",
        """
    route = O3MiniBranchOperator(task_id="route", prompt="Which team?", render_only=True)
    route >> list(handlers.values())
""",
    )
    result = run_dag(dag_id)
    result.assert_success()
    assert o3_standin_connection.chat_requests == []
    body = result.xcom("route")
    assert body["response_format"]["json_schema"]["schema"]["properties"]["choice"]["enum"] == [
        "billing",
        "bug",
        "other",
    ]
    assert {result.task_state(name) for name in ("billing", "bug", "other")} == {"success"}


def test_inputs_reach_the_branch_prompt_as_data_and_make_the_edge(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_branch_inputs",
        """
    @task
    def load_ticket():
        return {"text": "Charged twice {{ 6*7 }}"}

    route = O3MiniBranchOperator(task_id="route", inputs={"ticket": load_ticket()},
                                 prompt="Which team for: {{ inputs.ticket.text }}")
    route >> list(handlers.values())
""",
    )
    o3_standin_connection.script(chosen("billing"))
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    assert request.body["messages"] == [
        {"role": "user", "content": "Which team for: Charged twice {{ 6*7 }}"}
    ]
    assert result.task_state("load_ticket") == "success"
    assert result.xcom("route")["task_ids"] == ["billing"]

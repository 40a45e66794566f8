"""``@task.o3_mini_branch`` end to end: the function's prompt, the model's choice, the others skipped."""

from __future__ import annotations

import pytest

from airflow_o3.errors import InvalidRequestError
from tests.dagrun import run_dag
from tests.operators.test_branch import chosen, write_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_the_decorator_branches_on_the_prompt_its_function_returns(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_branch_decorated",
        """
    @task
    def ticket():
        return {"text": "Refund {{ 6*7 }} euros"}

    @task.o3_mini_branch(system_prompt="You route tickets.", choices={"money": "billing", "broken": "bug"})
    def route(t: dict) -> str:
        return "Which team for: " + t["text"]

    route(ticket()) >> [handlers["billing"], handlers["bug"]]
""",
    )
    o3_standin_connection.script(chosen("money"))
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    assert request.body["messages"] == [
        {"role": "developer", "content": "You route tickets."},
        {"role": "user", "content": "Which team for: Refund {{ 6*7 }} euros"},
    ]
    assert request.body["response_format"]["json_schema"]["schema"]["properties"]["choice"]["enum"] == [
        "money",
        "broken",
    ]
    assert (result.task_state("billing"), result.task_state("bug")) == ("success", "skipped")
    assert result.task_state("other") == "success", "not downstream of the branch: untouched"
    assert result.xcom("route")["task_ids"] == ["billing"]


def test_prompt_given_to_the_branch_decorator_is_refused_naming_the_fix():
    from airflow.providers.common.compat.sdk import task

    with pytest.raises(InvalidRequestError, match=r"@task.o3_mini_branch: prompt is what the decorated"):
        task.o3_mini_branch(prompt="Which?")

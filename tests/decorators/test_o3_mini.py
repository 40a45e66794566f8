"""``@task.o3_mini`` end to end: dag.test() runs of TaskFlow DAGs against the stand-in server."""

from __future__ import annotations

import pytest

from airflow_o3.errors import InvalidRequestError
from airflow_o3.testing.pytest_plugin import STANDIN_API_KEY
from tests.dagrun import AIRFLOW_3, run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture
def o3_standin(answering_standin):
    """Every reply names the prompt it answers (``answer_to``), so each result shows its request."""
    return answering_standin


HEADER = """
import pendulum
from datetime import timedelta
from airflow.providers.common.compat.sdk import DAG, task

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         default_args={{"retries": 2, "retry_delay": timedelta(0)}}):
"""


def write_dag(dag_file, dag_id: str, body: str) -> str:
    dag_file(HEADER.format(dag_id=dag_id) + body)
    return dag_id


def test_the_function_gets_the_upstream_value_and_its_prompt_is_sent_with_the_decorator_arguments(
    dag_file, o3_standin_connection
):
    dag_id = write_dag(
        dag_file,
        "o3_taskflow_basic",
        """
    @task
    def figures():
        return {"orders": 1284, "refunds": 17}

    @task.o3_mini(system_prompt="You are a precise analyst.", reasoning_effort="low",
                  max_completion_tokens=3000)
    def summarise(numbers: dict) -> str:
        return f"Summarise: {numbers['orders']} orders, {numbers['refunds']} refunds."

    summarise(figures())
""",
    )
    result = run_dag(dag_id)
    result.assert_success()

    (request,) = o3_standin_connection.chat_requests
    assert request.body["messages"] == [
        {"role": "developer", "content": "You are a precise analyst."},
        {"role": "user", "content": "Summarise: 1284 orders, 17 refunds."},
    ]
    assert (request.body["reasoning_effort"], request.body["max_completion_tokens"]) == ("low", 3000)
    assert result.xcom("summarise") == "Answer to: Summarise: 1284 orders, 17 refunds."
    usage = result.xcom("summarise", key="usage")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert result.xcom("summarise", key="completion")["finish_reason"] == "stop"
    assert result.leaks(STANDIN_API_KEY) == []


def test_a_returned_prompt_holding_jinja_from_upstream_is_sent_literally(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_taskflow_literal",
        """
    @task
    def note():
        return "Compute {{ 6*7 }} and {% if true %}yes{% endif %} {{ conn.aimlapi_default.password }}"

    @task.o3_mini(system_prompt="Today is {{ ds }}.")
    def ask(text: str) -> str:
        return "Note: " + text

    ask(note())
""",
    )
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    user = request.body["messages"][1]["content"]
    assert (
        user == "Note: Compute {{ 6*7 }} and {% if true %}yes{% endif %} {{ conn.aimlapi_default.password }}"
    )
    assert "{{" not in request.body["messages"][0]["content"], "system_prompt is still a template"
    assert result.leaks(STANDIN_API_KEY) == []


def test_returned_messages_are_the_conversation_with_the_system_prompt_first(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_taskflow_messages",
        """
    @task.o3_mini(system_prompt="Answer in French.")
    def converse():
        return [
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Bonjour."},
            {"role": "user", "content": "Now say {{ goodbye }}."},
        ]

    converse()
""",
    )
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    assert request.body["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Bonjour."},
        {"role": "user", "content": "Now say {{ goodbye }}."},
    ]


def test_expand_asks_once_per_upstream_item_and_pushes_each_reply(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_taskflow_mapped",
        """
    @task
    def tickets():
        return ["printer on fire", "refund please", "{{ 6*7 }}"]

    @task.o3_mini(reasoning_effort="low")
    def triage(ticket: str, team: str) -> str:
        return f"{team}: classify '{ticket}'"

    triage.partial(team="support").expand(ticket=tickets())
""",
    )
    result = run_dag(dag_id)
    result.assert_success()
    sent = sorted(r.body["messages"][-1]["content"] for r in o3_standin_connection.chat_requests)
    assert sent == [
        "support: classify 'printer on fire'",
        "support: classify 'refund please'",
        "support: classify '{{ 6*7 }}'",
    ]
    assert result.xcom("triage") == [
        "Answer to: support: classify 'printer on fire'",
        "Answer to: support: classify 'refund please'",
        "Answer to: support: classify '{{ 6*7 }}'",
    ]
    assert [u["attempts"] for u in result.xcom("triage", key="usage")] == [1, 1, 1]


@pytest.mark.parametrize("returned", ["''", "None", "42", "[{'text': 'no role'}]"])
def test_a_function_returning_no_prompt_fails_once_without_sending_anything(
    dag_file, o3_standin_connection, returned
):
    dag_id = write_dag(
        dag_file,
        f"o3_taskflow_bad_{abs(hash(returned))}",
        f"""
    @task.o3_mini
    def ask():
        return {returned}

    ask()
""",
    )
    result = run_dag(dag_id)
    assert result.task_state("ask") == "failed"
    assert result.try_number("ask") == 1, "a bad return value is final: no retry"
    assert "@task.o3_mini function ask() returned" in result.task_log("ask")
    assert "fix: return the prompt" in result.task_log("ask")
    assert o3_standin_connection.chat_requests == []


def test_a_deferred_decorated_task_gives_the_reply_and_xcoms(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_taskflow_deferred",
        """
    @task.o3_mini(deferrable=True)
    def ask(topic: str) -> str:
        return f"Explain {topic}."

    ask("tides")
""",
    )
    result = run_dag(dag_id)
    result.assert_success()
    assert result.xcom("ask") == "Answer to: Explain tides."
    assert result.xcom("ask", key="completion")["finish_reason"] == "stop"
    assert [r.body["messages"] for r in o3_standin_connection.chat_requests] == [
        [{"role": "user", "content": "Explain tides."}]
    ]


@pytest.mark.skipif(not AIRFLOW_3, reason="Airflow 2 stores the rendered fields before execute only")
def test_the_rendered_fields_show_the_prompt_the_function_returned(dag_file, o3_standin_connection):
    dag_id = write_dag(
        dag_file,
        "o3_taskflow_rendered",
        """
    @task.o3_mini
    def ask(topic: str) -> str:
        return f"Explain {topic}."

    ask("tides")
""",
    )
    result = run_dag(dag_id)
    result.assert_success()
    assert result.rendered_fields("ask")["prompt"] == "Explain tides."


@pytest.mark.parametrize("argument", ["prompt", "messages"])
def test_prompt_or_messages_given_to_the_decorator_are_refused_naming_the_fix(argument):
    from airflow.providers.common.compat.sdk import task

    with pytest.raises(InvalidRequestError, match=rf"@task.o3_mini: {argument} is what the decorated"):
        task.o3_mini(**{argument: "Hello"})


def test_the_decorators_are_found_through_the_provider_registry():
    from airflow.providers.common.compat.sdk import task

    from airflow_o3.decorators import o3_mini_branch_task, o3_mini_task

    assert task.o3_mini is o3_mini_task
    assert task.o3_mini_branch is o3_mini_branch_task


def test_returned_messages_with_their_own_developer_message_and_a_system_prompt_fail_once(
    dag_file, o3_standin_connection
):
    dag_id = write_dag(
        dag_file,
        "o3_taskflow_two_system_prompts",
        """
    @task.o3_mini(system_prompt="Answer in French.")
    def converse():
        return [{"role": "developer", "content": "Answer in German."}, {"role": "user", "content": "Hi"}]

    converse()
""",
    )
    result = run_dag(dag_id)
    assert result.task_state("converse") == "failed"
    assert result.try_number("converse") == 1
    assert "start with a developer message and system_prompt is given too" in result.task_log("converse")
    assert o3_standin_connection.chat_requests == []

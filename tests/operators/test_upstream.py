"""Upstream data by name (``inputs=``) and the check of ``ti.xcom_pull`` calls against the DAG's edges."""

from __future__ import annotations

import jinja2
import pytest

from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators.upstream import checked_inputs, missing_upstream_pulls, pulled_task_ids
from airflow_o3.testing.pytest_plugin import STANDIN_API_KEY
from tests.dagrun import run_dag

HEADER = """
import pendulum
from datetime import timedelta
from airflow.providers.common.compat.sdk import DAG, task
from airflow_o3.operators.o3mini import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         default_args={{"retries": 2, "retry_delay": timedelta(0)}}):
    @task
    def load_ticket():
        return {{"id": "T-9", "text": "Refund {{{{ 6*7 }}}} euros"}}

    @task
    def load_customer():
        return "ACME"
"""


def write_dag(dag_file, dag_id: str, body: str) -> str:
    dag_file(HEADER.format(dag_id=dag_id) + body)
    return dag_id


@pytest.mark.usefixtures("airflow_db")
def test_inputs_by_name_become_upstream_and_are_rendered_into_the_prompt_as_data(
    dag_file, o3_standin_connection
):
    dag_id = write_dag(
        dag_file,
        "o3_inputs_by_name",
        """
    O3MiniOperator(
        task_id="classify",
        inputs={"ticket": load_ticket(), "customer": load_customer(), "day": "{{ ds }}"},
        prompt=(
            "{{ inputs.customer }} ticket {{ inputs.ticket.id }} ({{ inputs.day }}): "
            "{{ inputs.ticket.text }}"
        ),
    )
""",
    )
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    content = request.body["messages"][0]["content"]
    assert content.startswith("ACME ticket T-9 (20")
    assert content.endswith("): Refund {{ 6*7 }} euros"), "upstream data is never rendered"
    assert "{{ ds }}" not in content
    rendered = result.rendered_fields("classify")
    assert rendered["prompt"] == content
    assert rendered["inputs"]["ticket"] == {"id": "T-9", "text": "Refund {{ 6*7 }} euros"}
    assert result.leaks(STANDIN_API_KEY) == []


def test_inputs_create_the_dependencies_when_the_dag_is_parsed():
    from airflow.providers.common.compat.sdk import DAG, task

    from airflow_o3.operators.o3mini import O3MiniOperator

    with DAG(dag_id="o3_inputs_edges", schedule=None) as dag:

        @task
        def load_ticket() -> str:
            return "x"

        ask = O3MiniOperator(task_id="ask", inputs={"ticket": load_ticket()}, prompt="{{ inputs.ticket }}")
    assert ask.upstream_task_ids == {"load_ticket"}
    assert missing_upstream_pulls(dag.get_task("ask")) == []


@pytest.mark.usefixtures("airflow_db")
def test_a_pull_from_a_task_that_is_not_upstream_fails_before_sending_naming_the_edge(
    dag_file, o3_standin_connection
):
    dag_id = write_dag(
        dag_file,
        "o3_pull_not_upstream",
        """
    load_ticket()
    O3MiniOperator(task_id="classify", prompt="Ticket: {{ ti.xcom_pull(task_ids='load_ticket')['text'] }}")
""",
    )
    result = run_dag(dag_id)
    assert result.task_state("classify") == "failed"
    assert result.try_number("classify") == 1, "the DAG will not change between tries: no retry"
    log = result.task_log("classify")
    assert "prompt pulls ti.xcom_pull(task_ids='load_ticket'), but load_ticket does not run before" in log
    assert "add `load_ticket >> classify`" in log
    assert o3_standin_connection.chat_requests == []


def test_missing_pulls_name_each_field_and_task_and_accept_ancestors():
    from airflow.providers.common.compat.sdk import DAG
    from airflow.providers.standard.operators.empty import EmptyOperator

    from airflow_o3.operators.o3mini import O3MiniOperator

    with DAG(dag_id="o3_pull_check", schedule=None) as dag:
        first, second, unrelated = (
            EmptyOperator(task_id="first"),
            EmptyOperator(task_id="second"),
            EmptyOperator(task_id="unrelated"),
        )
        ask = O3MiniOperator(
            task_id="ask",
            system_prompt="{{ ti.xcom_pull(task_ids=['first', 'unrelated']) }}",
            prompt="{{ ti.xcom_pull('second') }} {{ task_instance.xcom_pull(task_ids='typo') }}",
        )
        first >> second >> ask
        unrelated  # noqa: B018
    problems = missing_upstream_pulls(dag.get_task("ask"))
    assert len(problems) == 2
    assert problems[0].startswith("ask: prompt pulls ti.xcom_pull(task_ids='typo'), and the DAG has no task")
    assert "fix: correct the task id" in problems[0]
    assert problems[1].startswith("ask: system_prompt pulls ti.xcom_pull(task_ids='unrelated')")


@pytest.mark.parametrize(
    ("template", "found"),
    [
        ("{{ ti.xcom_pull(task_ids='a') }}", {"a"}),
        ("{{ ti.xcom_pull('a', key='k') }}", {"a"}),
        ('{% set x = task_instance.xcom_pull(task_ids=["a", "b"]) %}{{ x }}', {"a", "b"}),
        ("{{ ti.xcom_pull(task_ids='a', dag_id='other') }}", set()),
        ("{{ ti.xcom_pull(task_ids='a', include_prior_dates=True) }}", set()),
        ("{{ ti.xcom_pull(task_ids='a', run_id=params.run) }}", set()),
        ("{{ ti.xcom_pull(task_ids=params.which) }}", set()),
        ("{{ other.xcom_pull(task_ids='a') }}", set()),
        ("{{ ti.xcom_pull(task_ids='a' }}", set()),
    ],
)
def test_pulled_task_ids_are_the_literal_ids_of_this_dags_pulls(template, found):
    assert pulled_task_ids(jinja2.Environment(), [{"content": template}]) == found


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["a"], "inputs is a list"),
        ({"bad-name": 1}, r"inputs names \['bad-name'\] cannot be written"),
        ({"1st": 1}, "cannot be written"),
    ],
)
def test_unusable_inputs_are_refused_at_parse(inputs, message):
    with pytest.raises(InvalidRequestError, match=message):
        checked_inputs("ask", inputs)


@pytest.mark.parametrize(
    "dag_id",
    [
        "o3_daily_report",
        "o3_classify_tickets",
        "o3_daily_report_taskflow",
        "o3_classify_tickets_taskflow",
        "o3_branch_tickets",
    ],
)
def test_every_pull_in_the_example_dags_reads_a_task_that_runs_first(dag_id):
    from tests.dagrun import load_dag

    dag = load_dag(dag_id)
    assert [problem for task in dag.tasks for problem in missing_upstream_pulls(task)] == []

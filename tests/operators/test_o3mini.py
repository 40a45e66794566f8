"""O3MiniOperator inside real DAG runs: templating, failure modes, and what reaches XCom."""

from __future__ import annotations

import pytest

from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators import O3MiniOperator
from airflow_o3.testing import Reply
from tests.contract import validate_request_body
from tests.dagrun import run_dag
from tests.operators.helpers import error_line, import_error

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_HEADER = """
import pendulum
from airflow.providers.common.compat.sdk import DAG, task
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={{"topic": "tides"}}) as dag:
"""


def one_task_dag(dag_file, dag_id: str, operator_source: str, upstream: str = "") -> str:
    body = "\n".join("    " + line for line in (upstream + operator_source).strip().splitlines())
    dag_file(DAG_HEADER.format(dag_id=dag_id) + body + "\n")
    return dag_id


def test_inline_prompt_renders_xcom_params_and_macros(dag_file, o3_standin_connection):
    dag_id = one_task_dag(
        dag_file,
        "op_inline",
        'ask = O3MiniOperator(task_id="ask", '
        "prompt=\"On {{ ds }}: {{ params.topic }} and {{ ti.xcom_pull(task_ids='up') }}\")\n"
        "up() >> ask\n",
        upstream='@task\ndef up():\n    return "upstream figures"\n',
    )
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    content = request.body["messages"][0]["content"]
    assert content.endswith(": tides and upstream figures")
    assert content.startswith(f"On {result.logical_date:%Y-%m-%d}")
    validate_request_body(request.body, strict=True)


def test_messages_are_templated_and_sent_in_order(dag_file, o3_standin_connection):
    dag_id = one_task_dag(
        dag_file,
        "op_messages",
        "O3MiniOperator(task_id='ask', messages=["
        "{'role': 'developer', 'content': 'Talk about {{ params.topic }}.'},"
        "{'role': 'user', 'content': 'First question'},"
        "{'role': 'assistant', 'content': 'First answer'},"
        "{'role': 'user', 'content': 'And {{ params.topic }} again?'}],"
        " parameters={'seed': 5, 'stop': ['END'], 'provider': 'openai'})",
    )
    run_dag(dag_id).assert_success()
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    assert [m["content"] for m in request.body["messages"]] == [
        "Talk about tides.",
        "First question",
        "First answer",
        "And tides again?",
    ]
    assert (request.body["seed"], request.body["stop"], request.body["provider"]) == (5, ["END"], "openai")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("{{ params.no_such_param }}", "no_such_param"),
        ("{{ unknown_variable }}", "unknown_variable"),
        ("{{ broken ", "unexpected end of template"),
        ("{{ '' }}   ", "the rendered prompt is empty"),
    ],
)
def test_bad_templates_fail_before_any_request(dag_file, o3_standin_connection, prompt, message):
    dag_id = one_task_dag(dag_file, "op_bad_template", f"O3MiniOperator(task_id='ask', prompt={prompt!r})")
    result = run_dag(dag_id)
    assert result.task_state("ask") == "failed"
    assert message in result.task_log("ask")
    assert o3_standin_connection.chat_requests == []


@pytest.mark.parametrize(
    ("operator_source", "message", "fix"),
    [
        (
            "O3MiniOperator(task_id='ask', prompt='hi', max_tokens=500)",
            "ask: max_tokens: o3-mini refuses this parameter",
            "use max_completion_tokens instead",
        ),
        (
            "O3MiniOperator(task_id='ask', prompt='hi', temperature=0.2, top_p=0.9)",
            "ask: temperature: o3-mini refuses this parameter",
            "sample at a fixed temperature; remove it",
        ),
        (
            "O3MiniOperator(task_id='ask', prompt='hi', seed=5)",
            "ask: seed is a request parameter, not an argument",
            "fix: parameters={'seed': ...}",
        ),
        (
            "O3MiniOperator(task_id='ask', prompt='hi', reasoning_effort='max')",
            "ask: reasoning_effort: got 'max'",
            "fix: use 'low', 'medium' or 'high'",
        ),
        (
            "O3MiniOperator(task_id='ask', prompt='hi', max_completion_tokens=0)",
            "ask: max_completion_tokens: got 0",
            "fix: use a whole number from 1 to 100000",
        ),
        (
            "O3MiniOperator(task_id='ask', prompt='hi', parameters={'n': 0, 'tool_choice': 'always'})",
            "ask: parameters['n']: got 0",
            "parameters['tool_choice']: got 'always' (fix: use 'none', 'auto', 'required'",
        ),
        (
            "O3MiniOperator(task_id='ask', prompt='hi', parameters={'stop': ['a', 'b', 'c', 'd', 'e']})",
            "ask: parameters['stop']: got ['a', 'b', 'c', 'd', 'e']",
            "fix: use a string or a list of at most 4 strings",
        ),
        (
            "O3MiniOperator.partial(task_id='ask', max_tokens=5).expand(prompt=['a', 'b'])",
            "ask: max_tokens: o3-mini refuses this parameter",
            "use max_completion_tokens instead",
        ),
        (
            "O3MiniOperator.partial(task_id='ask', reasoning_effort='hgih').expand(prompt=['a', 'b'])",
            "ask: reasoning_effort: got 'hgih'",
            "fix: use 'low', 'medium' or 'high'",
        ),
        (
            "O3MiniBatchOperator(task_id='ask', items=['a'], prompt='{{ item }}', top_p=1)",
            "ask: top_p: o3-mini refuses this parameter",
            "remove it",
        ),
    ],
    ids=[
        "max_tokens",
        "temperature-top_p",
        "seed-as-argument",
        "reasoning_effort",
        "max_completion_tokens",
        "parameters-n-tool_choice",
        "parameters-stop",
        "partial-max_tokens",
        "partial-reasoning_effort",
        "batch-top_p",
    ],
)
def test_a_mistaken_argument_fails_the_dag_file_at_parse_naming_task_argument_and_fix(
    dag_file, operator_source, message, fix
):
    path = dag_file(
        DAG_HEADER.format(dag_id="op_parse_mistake")
        + "    from airflow_o3.operators.batch import O3MiniBatchOperator\n"
        + f"    {operator_source}\n"
    )
    line = error_line(import_error(path))
    assert line.startswith("airflow_o3.errors.InvalidRequestError: ask: ") or line.startswith(
        "InvalidRequestError: ask: "
    ), line
    assert message in line
    assert fix in line
    assert "Invalid arguments" not in line
    assert "Input should be" not in line, "the allowed values are said once, in the fix"


def test_literal_values_that_are_fine_parse_and_templates_are_left_to_run_time(dag_file):
    path = dag_file(
        DAG_HEADER.format(dag_id="op_parse_fine")
        + "    O3MiniOperator(task_id='ask', prompt='hi', reasoning_effort='low',\n"
        + "                   max_completion_tokens=2000, parameters={'n': 2, 'seed': 1, 'stop': 'END',\n"
        + "                   'tool_choice': 'auto', 'provider': '{{ params.topic }}'})\n"
    )
    assert import_error(path) == ""


def test_a_mapped_effort_from_upstream_is_checked_at_run_time_saying_the_fix_once(
    dag_file, o3_standin_connection
):
    dag_id = one_task_dag(
        dag_file,
        "op_mapped_effort",
        "O3MiniOperator.partial(task_id='ask', prompt='hi').expand(reasoning_effort=efforts())\n",
        upstream='@task\ndef efforts():\n    return ["low", "max"]\n',
    )
    result = run_dag(dag_id)
    assert result.task_state("ask", 0) == "success"
    assert result.task_state("ask", 1) == "failed"
    log = result.task_log("ask", 1)
    assert "reasoning_effort: got 'max' (fix: use 'low', 'medium' or 'high')" in log
    assert "Input should be" not in log
    assert [request.body["reasoning_effort"] for request in o3_standin_connection.chat_requests] == ["low"]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(content="", finish_reason="length"), "Raise max_completion_tokens or lower reasoning_effort"),
        (
            Reply(content=None, refusal="I can't help with that."),
            'o3-mini refused to answer: "I can\'t help with that."',
        ),
        (Reply(content="", finish_reason="content_filter"), "content filter stopped the reply"),
    ],
)
def test_replies_that_are_not_answers_fail_the_task_and_push_nothing(
    dag_file, o3_standin_connection, reply, message
):
    dag_id = one_task_dag(dag_file, "op_no_answer", "O3MiniOperator(task_id='ask', prompt='hi', retries=2)")
    o3_standin_connection.script(reply)
    result = run_dag(dag_id)
    assert result.task_state("ask") == "failed"
    assert message in result.task_log("ask")
    assert result.try_number("ask") == 1, "a task retry cannot mend a reply that is not an answer"
    assert result.xcom("ask", default=None) is None
    assert len(o3_standin_connection.chat_requests) == 1


def test_constructor_refuses_bad_arguments_at_parse_time():
    with pytest.raises(InvalidRequestError, match="either prompt or messages"):
        O3MiniOperator(task_id="t")
    with pytest.raises(InvalidRequestError, match="either prompt or messages"):
        O3MiniOperator(task_id="t", prompt="a", messages=[{"role": "user", "content": "b"}])
    with pytest.raises(InvalidRequestError, match="temperature: o3-mini refuses"):
        O3MiniOperator(task_id="t", prompt="a", parameters={"temperature": 0.2})
    with pytest.raises(InvalidRequestError, match="pass reasoning_effort as its own argument"):
        O3MiniOperator(task_id="t", prompt="a", parameters={"reasoning_effort": "low"})

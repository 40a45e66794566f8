"""Tool calls: tools and tool_choice pass through; the model's calls become the task's result."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_o3.errors import InvalidRequestError, ToolCallError
from airflow_o3.operators import O3MiniOperator
from airflow_o3.testing import Reply, stub_context
from tests.contract import validate_request_body
from tests.dagrun import run_dag
from tests.helpers import FAST_RETRY
from tests.operators.helpers import dag_with

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TOOL_CHOICE = {"type": "function", "function": {"name": "get_weather"}}


def call(call_id: str, arguments: str, name: str = "get_weather") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


TWO_CALLS = Reply(
    None,
    finish_reason="tool_calls",
    tool_calls=[
        call("call_1", '{"city": "Oslo", "unit": "c"}'),
        call("call_2", '{"city": "Lima", "unit": "f"}'),
    ],
)
EXPECTED = [
    {"id": "call_1", "name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}},
    {"id": "call_2", "name": "get_weather", "arguments": {"city": "Lima", "unit": "f"}},
]


def tool_operator(**kwargs: object) -> O3MiniOperator:
    return O3MiniOperator(
        task_id="ask",
        prompt="What is the weather in Oslo and Lima?",
        parameters={"tools": [WEATHER_TOOL], "tool_choice": "required"},
        request_retry=FAST_RETRY,
        **kwargs,
    )


def test_tools_and_tool_choice_are_sent_as_given(o3_standin_connection):
    O3MiniOperator(
        task_id="ask",
        prompt="Weather in Oslo?",
        parameters={"tools": [WEATHER_TOOL], "tool_choice": TOOL_CHOICE},
    ).execute(stub_context())
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    assert request.body["tools"] == [WEATHER_TOOL]
    assert request.body["tool_choice"] == TOOL_CHOICE


def test_tool_calls_are_the_result_with_parsed_arguments_instead_of_an_empty_reply_failure(
    o3_standin_connection,
):
    o3_standin_connection.script(TWO_CALLS)
    context = stub_context()
    assert tool_operator().execute(context) == EXPECTED
    assert context["ti"].xcoms["completion"]["finish_reason"] == "tool_calls"


def test_streamed_tool_calls_give_the_same_result_as_plain_ones(o3_standin_connection):
    o3_standin_connection.script(TWO_CALLS)
    assert tool_operator(stream=True).execute(stub_context()) == EXPECTED
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    assert request.body["stream"] is True


def test_tool_arguments_that_are_not_json_fail_naming_the_call_and_the_arguments(o3_standin_connection):
    o3_standin_connection.script(
        Reply(
            None,
            finish_reason="tool_calls",
            tool_calls=[call("call_ok", '{"city": "Oslo", "unit": "c"}'), call("call_bad", "{city: Oslo")],
        )
    )
    with pytest.raises(AirflowFailException) as raised:
        tool_operator().execute(stub_context())
    message = str(raised.value)
    assert isinstance(raised.value.__cause__, ToolCallError)
    assert "'get_weather' (id call_bad): Expecting property name enclosed in double quotes" in message
    assert "the arguments start '{city: Oslo'" in message
    assert "call_ok" not in message


def test_tool_calls_in_structured_mode_are_still_returned_as_calls(o3_standin_connection):
    o3_standin_connection.script(TWO_CALLS)
    operator = tool_operator(response_format={"type": "object", "properties": {"answer": {"type": "string"}}})
    assert operator.execute(stub_context()) == EXPECTED


def test_a_tool_without_parameters_is_refused_at_parse_and_before_anything_is_sent(o3_standin_connection):
    broken = {"type": "function", "function": {"name": "get_weather"}}
    with pytest.raises(InvalidRequestError, match=r"parameters\['tools'\]\[0\]\.function\.parameters: Field"):
        O3MiniOperator(task_id="ask", prompt="Weather?", parameters={"tools": [broken]})
    operator = O3MiniOperator(task_id="ask", prompt="Weather?")
    operator.parameters["tools"] = [broken]  # as a value known only at run time would be
    with pytest.raises(AirflowFailException, match=r"tools\[0\]\.function\.parameters: Field required"):
        operator.execute(stub_context())
    assert o3_standin_connection.chat_requests == []


def test_tool_choice_outside_the_contract_is_refused_at_parse_and_at_execute_before_sending(
    o3_standin_connection,
):
    parameters = {"tools": [WEATHER_TOOL], "tool_choice": "always"}
    with pytest.raises(InvalidRequestError, match=r"ask: parameters\['tool_choice'\]: got 'always'"):
        O3MiniOperator(task_id="ask", prompt="Weather?", parameters=parameters)
    operator = O3MiniOperator(task_id="ask", prompt="Weather?", parameters={"tools": [WEATHER_TOOL]})
    operator.parameters["tool_choice"] = "always"  # as a value known only at run time would be
    with pytest.raises(AirflowFailException) as raised:
        operator.execute(stub_context())
    assert isinstance(raised.value.__cause__, InvalidRequestError)
    assert "tool_choice: got 'always' (fix: use 'none', 'auto', 'required'" in str(raised.value)
    assert o3_standin_connection.chat_requests == []


@pytest.mark.usefixtures("airflow_db")
def test_tool_calls_end_to_end_reach_a_downstream_task_that_runs_them(dag_file, o3_standin_connection):
    dag_id = dag_with(
        dag_file,
        "tools_e2e",
        f"""
        ask = O3MiniOperator(
            task_id="ask",
            prompt="What is the weather in Oslo and Lima?",
            parameters={{"tools": [{WEATHER_TOOL!r}], "tool_choice": "required"}},
        )

        @task
        def run_tools(calls: list) -> list:
            return [
                f"{{c['id']}}: {{c['name']}}({{c['arguments']['city']}}, {{c['arguments']['unit']}})"
                for c in calls
            ]

        run_tools(ask.output)
        """,
    )
    o3_standin_connection.script(TWO_CALLS)
    result = run_dag(dag_id)
    result.assert_success()
    assert result.xcom("ask") == EXPECTED
    assert result.xcom("run_tools") == ["call_1: get_weather(Oslo, c)", "call_2: get_weather(Lima, f)"]
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    assert request.body["tools"] == [WEATHER_TOOL]
    assert request.body["tool_choice"] == "required"


@pytest.mark.usefixtures("airflow_db")
def test_bad_tool_arguments_end_to_end_fail_the_task_and_show_the_arguments(dag_file, o3_standin_connection):
    dag_id = dag_with(
        dag_file,
        "tools_e2e_bad_arguments",
        f"""
        O3MiniOperator(
            task_id="ask", prompt="Weather in Oslo?", parameters={{"tools": [{WEATHER_TOOL!r}]}}, retries=1
        )
        """,
    )
    o3_standin_connection.script(
        Reply(None, finish_reason="tool_calls", tool_calls=[call("call_9", '{"city": ')])
    )
    result = run_dag(dag_id)
    assert result.task_state("ask") == "failed"
    log = result.task_log("ask")
    assert "ToolCallError" in log
    assert "'get_weather' (id call_9)" in log
    assert "the arguments start '{\"city\": '" in log
    assert result.try_number("ask") == 1
    assert result.xcom("ask", default=None) is None
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)

"""Structured output: strict schemas, parsing and validating the reply, re-asks, refusals."""

from __future__ import annotations

import ast
import json
from enum import StrEnum
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from pydantic import BaseModel, Field

from airflow_o3.errors import InvalidRequestError, RefusalError, StructuredOutputError
from airflow_o3.operators import O3MiniOperator
from airflow_o3.structured import output_format, strict_schema
from airflow_o3.testing import Reply, stub_context
from tests.contract import validate_request_body
from tests.dagrun import run_dag
from tests.helpers import FAST_RETRY, list_price_usd, usage
from tests.operators.helpers import TICKET_SCHEMA, USER, dag_with

REPO = Path(__file__).resolve().parents[2]


class Label(StrEnum):
    billing = "billing"
    bug = "bug"


class Customer(BaseModel):
    name: str
    plan: str | None = None


class Ticket(BaseModel):
    label: Label
    confidence: float = Field(ge=0, le=1)
    customer: Customer = Field(description="who wrote the ticket")
    tags: list[str] = []
    history: list[Customer]


def structured_operator(**kwargs: object) -> O3MiniOperator:
    return O3MiniOperator(task_id="ask", prompt=USER, request_retry=FAST_RETRY, **kwargs)


def objects_in(schema: object) -> list[dict]:
    """Every sub-schema describing an object."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            found.append(schema)
        for value in schema.values():
            found.extend(objects_in(value))
    elif isinstance(schema, list):
        for value in schema:
            found.extend(objects_in(value))
    return found


# -- building the response_format ------------------------------------------------------------------


def test_schema_dict_is_sent_in_strict_form_on_every_object():
    schema = {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "items": {
                "type": "array",
                "items": {"type": "object", "properties": {"sku": {"type": "string"}}},
            },
            "meta": {
                "anyOf": [{"type": "null"}, {"type": "object", "properties": {"k": {"type": "integer"}}}]
            },
        },
        "required": ["summary"],
    }
    output = output_format(schema)
    sent = output.response_format
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["name"] == "response"
    objects = objects_in(sent["json_schema"]["schema"])
    assert len(objects) == 3
    for obj in objects:
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    assert schema["required"] == ["summary"], "the DAG author's schema is not changed in place"


def test_pydantic_model_is_sent_in_strict_form_with_defs_nullable_fields_and_no_defaults():
    output = output_format(Ticket)
    spec = output.response_format["json_schema"]
    assert spec["name"] == "Ticket"
    schema = spec["schema"]
    assert schema["required"] == ["label", "confidence", "customer", "tags", "history"]
    assert schema["$defs"]["Customer"]["required"] == ["name", "plan"]
    assert schema["$defs"]["Customer"]["additionalProperties"] is False
    # a $ref with a sibling description is inlined (strict mode takes a bare $ref only)
    assert schema["properties"]["customer"]["description"] == "who wrote the ticket"
    assert schema["properties"]["customer"]["additionalProperties"] is False
    assert "$ref" not in schema["properties"]["customer"]
    assert "default" not in json.dumps(schema)
    for obj in objects_in(schema):
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    example = {
        "label": "bug",
        "confidence": 0.5,
        "customer": {"name": "Ada", "plan": None},
        "tags": [],
        "history": [],
    }
    assert output.parse(json.dumps(example), "stop") == example


def test_schema_with_a_free_form_map_is_refused_at_parse_time_naming_where():
    class Counts(BaseModel):
        per_label: dict[str, int]

    with pytest.raises(
        InvalidRequestError, match=r"ask: response_format: the object at \$\.properties\.per_label"
    ):
        structured_operator(response_format=Counts)


def test_schema_whose_top_level_is_not_an_object_is_refused_with_the_fix():
    with pytest.raises(InvalidRequestError, match=r"top level must be an object.*wrap it"):
        strict_schema({"type": "array", "items": {"type": "string"}})


@pytest.mark.parametrize(
    ("value", "kind", "sent"),
    [
        ("json_object", "json_object", {"type": "json_object"}),
        ({"type": "json_object"}, "json_object", {"type": "json_object"}),
        ("text", "text", {"type": "text"}),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "loose", "schema": {"type": "object"}, "strict": False},
            },
            "json_schema",
            {
                "type": "json_schema",
                "json_schema": {"name": "loose", "schema": {"type": "object"}, "strict": False},
            },
        ),
    ],
)
def test_json_object_text_and_the_contracts_own_dicts_are_accepted(value, kind, sent):
    output = output_format(value)
    assert (output.kind, dict(output.response_format)) == (kind, sent)


@pytest.mark.parametrize("value", ["yaml", 42, ["label"], {"type": "json_schema"}])
def test_unknown_response_format_values_are_refused_at_parse_time(value):
    with pytest.raises(InvalidRequestError, match="response_format"):
        structured_operator(response_format=value)


def test_json_retries_without_a_json_format_is_refused_at_parse_time():
    with pytest.raises(InvalidRequestError, match="json_retries re-asks for a JSON reply"):
        structured_operator(json_retries=2)
    with pytest.raises(InvalidRequestError, match="json_retries is -1"):
        structured_operator(response_format=TICKET_SCHEMA, json_retries=-1)


@pytest.mark.parametrize("module", ["airflow_o3/operators/o3mini.py", "airflow_o3/structured.py"])
def test_parse_time_modules_have_no_top_level_import_of_heavy_libraries(module):
    tree = ast.parse((REPO / module).read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module.split(".")[0])
    assert top_level.isdisjoint({"requests", "httpx", "jsonschema", "pydantic"})


# -- checks before anything is sent -----------------------------------------------------------------


def test_invalid_json_schema_is_refused_before_anything_is_sent(o3_standin_connection):
    operator = structured_operator(
        response_format={"type": "object", "properties": {"n": {"type": "whole number"}}}
    )
    with pytest.raises(AirflowFailException, match=r"not valid JSON Schema at \$\.properties\.n\.type"):
        operator.execute(stub_context())
    assert o3_standin_connection.chat_requests == []


def test_json_object_mode_without_the_word_json_is_refused_before_sending(o3_standin_connection):
    operator = O3MiniOperator(task_id="ask", prompt="Classify this ticket.", response_format="json_object")
    with pytest.raises(AirflowFailException, match="needs the word JSON in the prompt"):
        operator.execute(stub_context())
    assert o3_standin_connection.chat_requests == []


# -- reading the reply (operator with a stub task instance, real hook, stand-in server) -------------


def test_reply_matching_the_schema_is_returned_as_plain_json(o3_standin_connection):
    context = stub_context()
    result = structured_operator(response_format=Ticket).execute(context)
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    assert request.body["response_format"]["json_schema"]["name"] == "Ticket"
    assert result["label"] == "billing"
    assert type(result) is dict
    assert json.loads(json.dumps(result)) == result
    assert context["ti"].xcoms["usage"]["attempts"] == 1


def test_invalid_json_fails_with_the_parse_error_and_the_start_of_the_reply(o3_standin_connection):
    o3_standin_connection.script(Reply("label: billing, confidence: high"))
    with pytest.raises(AirflowFailException) as raised:
        structured_operator(response_format=TICKET_SCHEMA).execute(stub_context())
    message = str(raised.value)
    assert "the reply is not valid JSON: Expecting value: line 1 column 1" in message
    assert "Start of the reply: 'label: billing, confidence: high'" in message
    assert isinstance(raised.value.__cause__, StructuredOutputError)


def test_schema_mismatch_fails_naming_each_field_and_the_start_of_the_reply(o3_standin_connection):
    o3_standin_connection.script(Reply(json.dumps({"label": "spam", "confidence": 2, "reason": "x"})))
    with pytest.raises(AirflowFailException) as raised:
        structured_operator(response_format=TICKET_SCHEMA).execute(stub_context())
    message = str(raised.value)
    assert "does not match the schema 'Ticket_classification'" in message
    assert "$.label: 'spam' is not one of ['billing', 'bug', 'feature_request', 'other']" in message
    assert "$.confidence: 2 is greater than the maximum of 1" in message
    assert 'Start of the reply: \'{"label": "spam"' in message


def test_json_object_reply_that_is_not_an_object_fails(o3_standin_connection):
    o3_standin_connection.script(Reply("[1, 2]"))
    operator = O3MiniOperator(task_id="ask", prompt="Answer in JSON.", response_format="json_object")
    with pytest.raises(AirflowFailException, match=r"\$: list is not a JSON object"):
        operator.execute(stub_context())


def test_truncated_json_fails_with_the_token_budget_fix(o3_standin_connection):
    o3_standin_connection.script(Reply('{"label": "bill', finish_reason="length"))
    with pytest.raises(AirflowFailException) as raised:
        structured_operator(response_format=TICKET_SCHEMA).execute(stub_context())
    assert "cut off at the token budget (finish_reason length)" in str(raised.value)
    assert "raise max_completion_tokens" in str(raised.value)
    assert '\'{"label": "bill\'' in str(raised.value)


def test_refusal_in_structured_mode_is_its_own_error_and_is_not_asked_again(o3_standin_connection):
    o3_standin_connection.script(Reply(None, refusal="I can't classify that."))
    with pytest.raises(AirflowFailException) as raised:
        structured_operator(response_format=TICKET_SCHEMA, json_retries=2).execute(stub_context())
    assert isinstance(raised.value.__cause__, RefusalError)
    assert 'refused to give the structured output (json_schema): "I can\'t classify that."' in str(
        raised.value
    )
    assert len(o3_standin_connection.chat_requests) == 1


def test_json_retries_ask_again_with_the_problem_and_usage_adds_up_every_attempt(o3_standin_connection):
    answer = {"label": "billing", "confidence": 0.5, "reason": "charged twice"}
    o3_standin_connection.script(
        Reply("not json", usage=usage(prompt=100, completion=250, reasoning=200)),
        Reply(json.dumps({"label": "nope"}), usage=usage(prompt=130, completion=230, reasoning=210)),
        Reply(json.dumps(answer), usage=usage(prompt=160, completion=260, reasoning=220)),
    )
    context = stub_context()
    result = structured_operator(response_format=TICKET_SCHEMA, json_retries=2).execute(context)

    assert result == answer
    first, second, third = o3_standin_connection.chat_requests
    for request in (first, second, third):
        validate_request_body(request.body, strict=True)
    assert second.body["messages"][:1] == first.body["messages"]
    assert second.body["messages"][1] == {"role": "assistant", "content": "not json"}
    assert second.body["messages"][2]["role"] == "user"
    assert "That reply cannot be used: the reply is not valid JSON" in second.body["messages"][2]["content"]
    assert third.body["messages"][3] == {"role": "assistant", "content": '{"label": "nope"}'}
    assert "'confidence' is a required property" in third.body["messages"][4]["content"]
    request_ids = [request.header("X-Client-Request-Id") for request in (first, second, third)]
    assert request_ids[1:] == [f"{request_ids[0]}:r1", f"{request_ids[0]}:r2"]

    summed = context["ti"].xcoms["usage"]
    assert summed["attempts"] == 3
    assert (summed["prompt_tokens"], summed["completion_tokens"], summed["total_tokens"]) == (390, 740, 1130)
    assert summed["completion_tokens_details"]["reasoning_tokens"] == 630
    assert summed["usd_spent"] == pytest.approx(list_price_usd(prompt=390, completion=740), abs=3e-9)


def test_json_retries_that_run_out_fail_with_the_last_problem(o3_standin_connection):
    o3_standin_connection.script(Reply("nope 1"), Reply("nope 2"))
    with pytest.raises(AirflowFailException, match="Start of the reply: 'nope 2'"):
        structured_operator(response_format=TICKET_SCHEMA, json_retries=1).execute(stub_context())
    assert len(o3_standin_connection.chat_requests) == 2


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("airflow_db")
def test_structured_output_end_to_end_pushes_the_parsed_object_to_downstream_tasks(
    dag_file, o3_standin_connection
):
    dag_id = dag_with(
        dag_file,
        "structured_e2e",
        """
        classify = O3MiniOperator(
            task_id="classify",
            system_prompt="Classify the support ticket.",
            prompt="Ticket: {{ params.ticket }}",
            response_format=TICKET_SCHEMA,
        )

        @task
        def route(classification: dict) -> str:
            return f"{classification['label']} at {classification['confidence']}"

        route(classify.output)
        """,
    )
    result = run_dag(dag_id)
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    spec = request.body["response_format"]["json_schema"]
    assert (spec["name"], spec["strict"]) == ("Ticket_classification", True)
    assert spec["schema"]["required"] == ["label", "confidence", "reason"]
    assert spec["schema"]["additionalProperties"] is False
    assert result.xcom("classify") == {"label": "billing", "confidence": 0.5, "reason": "example"}
    assert result.xcom("route") == "billing at 0.5"
    assert result.xcom("classify", key="usage")["attempts"] == 1
    assert result.rendered_fields("classify")["prompt"] == "Ticket: The invoice was charged twice."


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply("label=billing"), "the reply is not valid JSON"),
        (Reply(json.dumps({"label": "billing"})), "$: 'confidence' is a required property"),
        (Reply(None, refusal="Not something I can label."), "refused to give the structured output"),
    ],
    ids=["invalid-json", "schema-mismatch", "refusal"],
)
def test_unusable_structured_replies_fail_the_task_end_to_end_without_task_retries(
    dag_file, o3_standin_connection, reply, message
):
    dag_id = dag_with(
        dag_file,
        "structured_e2e_failures",
        """
        O3MiniOperator(
            task_id="classify", prompt="{{ params.ticket }}", response_format=TICKET_SCHEMA, retries=2
        )
        """,
    )
    o3_standin_connection.script(reply)
    result = run_dag(dag_id)
    assert result.task_state("classify") == "failed"
    assert message in result.task_log("classify")
    assert result.try_number("classify") == 1
    assert result.xcom("classify", default=None) is None
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)


@pytest.mark.usefixtures("airflow_db")
def test_json_retries_end_to_end_recover_and_bill_every_attempt(dag_file, o3_standin_connection):
    dag_id = dag_with(
        dag_file,
        "structured_e2e_retries",
        """
        O3MiniOperator(
            task_id="classify", prompt="{{ params.ticket }}", response_format=TICKET_SCHEMA, json_retries=1
        )
        """,
    )
    answer = {"label": "billing", "confidence": 0.9, "reason": "charged twice"}
    o3_standin_connection.script(
        Reply(
            '{"label": "billing", "confidence": 0.9', usage=usage(prompt=80, completion=300, reasoning=280)
        ),
        Reply(json.dumps(answer), usage=usage(prompt=120, completion=310, reasoning=290)),
    )
    result = run_dag(dag_id)
    result.assert_success()
    assert result.xcom("classify") == answer
    requests = o3_standin_connection.chat_requests
    assert len(requests) == 2
    for request in requests:
        validate_request_body(request.body, strict=True)
    summed = result.xcom("classify", key="usage")
    assert summed["attempts"] == 2
    assert (summed["prompt_tokens"], summed["completion_tokens"]) == (200, 610)
    assert summed["completion_tokens_details"]["reasoning_tokens"] == 570
    assert summed["usd_spent"] == pytest.approx(list_price_usd(prompt=200, completion=610), abs=3e-9)
    assert "not the JSON asked for, asking again" in result.task_log("classify")


@pytest.mark.usefixtures("airflow_db")
def test_structured_output_with_dynamic_task_mapping_and_a_pydantic_class(dag_file, o3_standin_connection):
    dag_file(
        """
        import pendulum
        from pydantic import BaseModel
        from airflow.providers.common.compat.sdk import DAG
        from airflow_o3.operators import O3MiniOperator

        class Verdict(BaseModel):
            label: str
            score: float

        with DAG("structured_mapped", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
            O3MiniOperator.partial(task_id="ask", response_format=Verdict, stream=True).expand(
                prompt=["Rate row 1", "Rate row 2"]
            )
        """
    )
    result = run_dag("structured_mapped")
    result.assert_success()
    assert result.xcom("ask") == [{"label": "example", "score": 0.5}] * 2
    assert len(o3_standin_connection.chat_requests) == 2
    for request in o3_standin_connection.chat_requests:
        validate_request_body(request.body, strict=True)
        assert request.body["response_format"]["json_schema"]["name"] == "Verdict"

"""Proof that the test infrastructure works: tests/dagrun.py (end-to-end DAG runs) and tests/contract.py."""

from __future__ import annotations

import copy
import json
import logging
from datetime import timedelta

import pendulum
import pytest

from tests.contract import (
    REASONING_UNSUPPORTED_PARAMS,
    VENDORED_CONTRACT,
    contract_path,
    openapi_to_json_schema,
    request_schema,
    response_schema,
    shared_contract_path,
    stream_chunk_schema,
    validate_request_body,
    validate_response_body,
    validate_stream_chunk,
)
from tests.dagrun import DagLoadError, run_dag

START = pendulum.datetime(2024, 1, 1, tz="UTC")

# ------------------------------------------------------------------------------------------------
# Contract validator (no Airflow needed)
# ------------------------------------------------------------------------------------------------

MINIMAL = {"model": "o3-mini", "messages": [{"role": "user", "content": "hi"}]}

VALID_BODIES = {
    "minimal": MINIMAL,
    "reasoning_effort": {**MINIMAL, "reasoning_effort": "low"},
    "stop_null_n_null": {**MINIMAL, "stop": None, "n": None},
    "stop_string": {**MINIMAL, "stop": "END"},
    "stop_list": {**MINIMAL, "stop": ["END", "STOP"]},
    "content_parts": {
        "model": "o3-mini",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    },
    "everything": {
        "model": "o3-mini",
        "messages": [
            {"role": "developer", "content": "Answer in JSON."},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?", "name": "alice"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 3}'},
        ],
        "max_completion_tokens": 2048,
        "reasoning_effort": "high",
        "seed": 7,
        "n": 1,
        "stream": False,
        "stream_options": {"include_usage": True},
        "provider": "openai",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Current weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                        "additionalProperties": False,
                    },
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "strict": True,
                "schema": {
                    "type": "object",
                    "properties": {"summary": {"type": "string"}, "score": {"type": ["number", "null"]}},
                    "required": ["summary", "score"],
                    "additionalProperties": False,
                },
            },
        },
    },
    "json_object": {**MINIMAL, "response_format": {"type": "json_object"}},
    "tool_choice_auto": {**MINIMAL, "tool_choice": "auto"},
    "json_schema_strict_null": {
        **MINIMAL,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {}, "strict": None},
        },
    },
}


@pytest.mark.parametrize("body", VALID_BODIES.values(), ids=VALID_BODIES.keys())
def test_contract_accepts_valid_request_bodies(body):
    validate_request_body(body)
    validate_request_body(body, strict=True)


INVALID_BODIES = {
    "no_messages": ({"model": "o3-mini"}, ["$: 'messages' is a required property"]),
    "bad_role": (
        {"model": "o3-mini", "messages": [{"role": "admin", "content": "hi"}]},
        ["$.messages[0]:", "'admin' is not one of ['user']"],
    ),
    "reasoning_effort_extreme": (
        {**MINIMAL, "reasoning_effort": "extreme"},
        ["$.reasoning_effort: 'extreme' is not one of ['low', 'medium', 'high']"],
    ),
    "other_model": ({**MINIMAL, "model": "gpt-4o"}, ["$.model: 'gpt-4o' is not one of ['o3-mini']"]),
    "n_zero": ({**MINIMAL, "n": 0}, ["$.n"]),
    "stop_number": ({**MINIMAL, "stop": 3}, ["$.stop", "3 is not of type 'null'"]),
    "seed_zero": ({**MINIMAL, "seed": 0}, ["$.seed: 0 is less than the minimum of 1"]),
    "image_part": (
        {
            "model": "o3-mini",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
        },
        ["$.messages[0]"],
    ),
    "tool_without_parameters": (
        {**MINIMAL, "tools": [{"type": "function", "function": {"name": "f"}}]},
        ["$.tools[0].function: 'parameters' is a required property"],
    ),
    "json_schema_without_name": (
        {**MINIMAL, "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
        ["$.response_format"],
    ),
    "tool_message_without_id": (
        {"model": "o3-mini", "messages": [{"role": "tool", "content": "x"}]},
        ["'tool_call_id' is a required property"],
    ),
}


@pytest.mark.parametrize(("body", "expected"), INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_contract_rejects_invalid_request_bodies(body, expected):
    with pytest.raises(AssertionError) as excinfo:
        validate_request_body(body)
    message = str(excinfo.value)
    assert message.startswith("request body does not match the o3-mini contract")
    for fragment in expected:
        assert fragment in message


def test_contract_reports_every_error_at_once():
    body = {"model": "o3", "messages": [{"role": "admin", "content": "hi"}], "reasoning_effort": "extreme"}
    with pytest.raises(AssertionError, match=r"\(3 errors\)") as excinfo:
        validate_request_body(body)
    assert "$.model" in str(excinfo.value)
    assert "$.reasoning_effort" in str(excinfo.value)
    assert "$.messages[0]" in str(excinfo.value)


def test_contract_strict_mode_rejects_unknown_and_reasoning_unsupported_params():
    body = {**MINIMAL, "temperature": 0.2, "foo": 1}
    validate_request_body(body)  # the schema itself allows unknown keys
    with pytest.raises(AssertionError) as excinfo:
        validate_request_body(body, strict=True)
    assert "$.temperature: not a parameter of the o3-mini schema (reasoning models reject it)" in str(
        excinfo.value
    )
    assert "$.foo: not a parameter" in str(excinfo.value)
    assert "max_tokens" in REASONING_UNSUPPORTED_PARAMS


RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1762343744,
    "model": "o3-mini-2025-01-31",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello", "refusal": None, "annotations": None,
                        "audio": None, "tool_calls": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
        "completion_tokens_details": {"reasoning_tokens": 12, "audio_tokens": None,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": None},
    },
    "meta": {"usage": {"credits_used": 120, "usd_spent": 0.0001}},
}  # fmt: skip


def test_contract_response_validator():
    validate_response_body(RESPONSE)
    minimal = {k: RESPONSE[k] for k in ("id", "object", "created", "model", "usage")}
    minimal["choices"] = [
        {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}
    ]
    validate_response_body(minimal)

    no_usage = {k: v for k, v in RESPONSE.items() if k != "usage"}
    with pytest.raises(AssertionError, match=r"\$: 'usage' is a required property"):
        validate_response_body(no_usage)
    bad_finish = copy.deepcopy(RESPONSE)
    bad_finish["choices"][0]["finish_reason"] = "done"
    with pytest.raises(AssertionError, match=r"\$\.choices\[0\]\.finish_reason"):
        validate_response_body(bad_finish)


def test_contract_stream_chunk_validator():
    validate_stream_chunk(
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "o3-mini",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}, "finish_reason": None}]}
    )  # fmt: skip
    with pytest.raises(AssertionError):
        validate_stream_chunk({"id": "c1"})
    # the published schema wants finish_reason, delta.role and delta.content in every chunk
    mid_stream = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "o3-mini",
                  "choices": [{"index": 0, "delta": {"content": "llo"}, "finish_reason": None}]}  # fmt: skip
    validate_stream_chunk(mid_stream)
    validate_stream_chunk({**mid_stream, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    with pytest.raises(AssertionError) as excinfo:
        validate_stream_chunk(mid_stream, null_finish_reason_ok=False)
    assert "$.choices[0].finish_reason: None is not of type 'string'" in str(excinfo.value)
    assert "'role' is a required property" in str(excinfo.value)


def _walk(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def test_converted_schemas_are_clean_json_schema():
    from jsonschema import Draft202012Validator

    for schema in (request_schema(), response_schema(), stream_chunk_schema()):
        Draft202012Validator.check_schema(schema)
        for path, key, _ in _walk(schema):
            in_properties = path.endswith("/properties")
            assert in_properties or key not in ("nullable", "example"), f"{path}/{key}"
    stop = request_schema()["properties"]["stop"]
    assert {"type": "null"} in stop["anyOf"]
    assert request_schema()["properties"]["n"]["anyOf"][1] == {"type": "null"}
    # additionalProperties: {nullable: true} means "any value", not "null only"
    params = request_schema()["properties"]["tools"]["items"]["properties"]["function"]["properties"][
        "parameters"
    ]
    assert params["additionalProperties"] == {
        "description": "The parameters the functions accepts, described as a JSON Schema object."
    }
    assert request_schema() is not request_schema()  # callers get copies


def test_openapi_conversion_rules():
    assert openapi_to_json_schema({"nullable": True}) == {}
    assert openapi_to_json_schema({"anyOf": [{"type": "string"}, {"nullable": True}]}) == {
        "anyOf": [{"type": "string"}, {"type": "null"}]
    }
    assert openapi_to_json_schema(
        {"type": "string", "nullable": True, "description": "d", "example": "x"}
    ) == {
        "description": "d",
        "anyOf": [{"type": "string"}, {"type": "null"}],
    }
    assert openapi_to_json_schema({"type": "string", "nullable": False}) == {"type": "string"}
    # property *names* that look like keywords survive
    converted = openapi_to_json_schema(
        {"type": "object", "properties": {"example": {"type": "string"}, "nullable": {"type": "boolean"}}}
    )
    assert converted == {
        "type": "object",
        "properties": {"example": {"type": "string"}, "nullable": {"type": "boolean"}},
    }


def test_contract_path_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("O3_CONTRACT", raising=False)
    default = contract_path()
    assert default.name == "o3-mini.openapi.json"
    assert default.is_file()
    assert json.loads(default.read_text())["openapi"].startswith("3.0")
    monkeypatch.setenv("O3_CONTRACT", str(tmp_path / "x.json"))
    assert contract_path() == tmp_path / "x.json"


@pytest.mark.parametrize("name", ["o3-mini.openapi.json", "billing-balance.openapi.json"])
def test_the_vendored_contracts_are_the_shared_ones(name):
    shared = shared_contract_path().with_name(name)
    vendored = VENDORED_CONTRACT.with_name(name)
    if not shared.is_file():
        pytest.skip(f"no shared contract at {shared} (a clone on its own): the vendored copy is used")
    assert vendored.read_bytes() == shared.read_bytes(), f"{vendored} is stale: copy {shared} over it"


# ------------------------------------------------------------------------------------------------
# End-to-end DAG runs
# ------------------------------------------------------------------------------------------------


def _pipeline_dag(dag_id: str):
    from airflow.providers.common.compat.sdk import DAG, task
    from airflow.providers.standard.operators.python import PythonOperator

    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:

        @task
        def produce(ti=None):
            print("PRINT-MARK from produce")
            logging.getLogger("airflow_o3.test").info("STDLIB-MARK from produce")
            ti.xcom_push(key="extra", value={"nested": [1, 2, {"deep": None}], "n": 1.5})
            return {"answer": 42, "items": ["a", "b"]}

        @task
        def double(x):
            return x * 2

        @task
        def total(values):
            return sum(values)

        @task
        def nothing():
            return None

        PythonOperator(
            task_id="render",
            python_callable=lambda prompt, options: f"{prompt}|{options['effort']}",
            op_kwargs={
                "prompt": "Summarise {{ dag_run.conf['topic'] }} for {{ params.audience }}",
                "options": {"effort": "{{ dag_run.conf.get('effort', 'medium') }}"},
            },
            params={"audience": "children"},
        )
        produce()
        total(double.expand(x=[1, 2, 3]))
        nothing()
    return dag


@pytest.mark.usefixtures("airflow_db")
def test_run_dag_object_xcoms_states_and_rendered_fields(capsys):
    result = run_dag(_pipeline_dag("infra_pipeline"), run_conf={"topic": "tides", "effort": "low"})

    result.assert_success()
    assert result.state == "success"
    assert type(result.state) is str
    assert result.conf == {"topic": "tides", "effort": "low"}
    assert result.task_states == {
        "produce": "success",
        ("double", 0): "success",
        ("double", 1): "success",
        ("double", 2): "success",
        "total": "success",
        "nothing": "success",
        "render": "success",
    }
    assert result.failed_tasks == []

    # XComs come back deserialized: a dict is a dict
    assert result.xcom("produce") == {"answer": 42, "items": ["a", "b"]}
    assert result.xcom("produce", key="extra") == {"nested": [1, 2, {"deep": None}], "n": 1.5}
    assert result.xcom("double") == [2, 4, 6]
    assert result.xcom("double", map_index=1) == 4
    assert result.map_indexes("double") == [0, 1, 2]
    assert result.xcom("total") == 12
    assert result.xcom("render") == "Summarise tides for children|low"
    # a task returning None pushes nothing
    with pytest.raises(KeyError, match="no XCom 'return_value' for 'nothing'"):
        result.xcom("nothing")
    assert result.xcom("nothing", default=None) is None
    assert ("produce", -1, "extra") in result.xcoms

    assert result.try_number("produce") == 1
    assert result.try_number("double", map_index=2) == 1

    assert result.rendered_fields("render")["op_kwargs"] == {
        "prompt": "Summarise tides for children",
        "options": {"effort": "low"},
    }
    assert result.rendered_fields("double", map_index=0)["op_kwargs"] == {"x": 1}
    with pytest.raises(KeyError):
        result.rendered_fields("render", map_index=3)

    # Logs: in result.log, per task, and in capsys (print, stdlib logging and Airflow's structlog)
    assert "PRINT-MARK from produce" in result.log
    assert "STDLIB-MARK from produce" in result.log
    produce_log = result.task_log("produce")
    assert "STDLIB-MARK from produce" in produce_log
    assert "Done. Returned value was: {'answer': 42" in produce_log
    assert "PRINT-MARK" not in result.task_log("total")
    out = capsys.readouterr().out
    assert "PRINT-MARK from produce" in out
    assert "STDLIB-MARK from produce" in out
    assert "[DAG TEST] starting task_id=produce" in out
    assert result.leaks("PRINT-MARK") == ["log"]
    assert result.leaks("no-such-text") == []
    assert result.leaks("children") == [
        "log",  # "Done. Returned value was: ..."
        "xcom render[-1] return_value",
        "rendered render[-1] op_kwargs",
    ]


@pytest.mark.usefixtures("airflow_db")
def test_stdlib_logs_reach_capfd_too(capfd):
    result = run_dag(_pipeline_dag("infra_pipeline_capfd"), run_conf={"topic": "x"})
    assert result.state == "success"
    out = capfd.readouterr().out
    assert "STDLIB-MARK from produce" in out
    assert "PRINT-MARK from produce" in out


@pytest.mark.usefixtures("airflow_db")
def test_stdlib_logging_reaches_capsys_outside_dag_runs(capsys):
    logging.getLogger("airflow_o3.test").warning("OUTSIDE-DAG-MARK")
    assert "OUTSIDE-DAG-MARK" in capsys.readouterr().out


@pytest.mark.usefixtures("airflow_db")
def test_failures_retries_and_assert_success():
    from airflow.providers.common.compat.sdk import DAG, task

    with DAG("infra_failures", schedule=None, start_date=START) as dag:

        @task(retries=1, retry_delay=timedelta(0))
        def flaky(ti=None):
            if ti.try_number == 1:
                raise RuntimeError("first attempt fails")
            return ti.try_number

        @task
        def boom():
            raise ValueError("BOOM-MARK")

        @task
        def after(x):
            return x

        flaky()
        after(boom())

    result = run_dag(dag)  # a failing task does not raise: the run ends failed

    assert result.state == "failed"
    assert result.task_states == {"flaky": "success", "boom": "failed", "after": "upstream_failed"}
    assert result.try_number("flaky") == 2
    assert result.xcom("flaky") == 2
    assert result.failed_tasks == ["after", "boom"]
    assert "BOOM-MARK" in result.task_log("boom")
    assert "first attempt fails" in result.task_log("flaky")
    with pytest.raises(AssertionError, match="ended 'failed'") as excinfo:
        result.assert_success()
    assert "BOOM-MARK" in str(excinfo.value)


@pytest.mark.usefixtures("airflow_db")
def test_deferred_task_runs_its_trigger_inline():
    from airflow.providers.common.compat.sdk import DAG
    from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor

    with DAG("infra_deferral", schedule=None, start_date=START) as dag:
        TimeDeltaSensor(task_id="wait", delta=timedelta(seconds=1), deferrable=True)

    result = run_dag(dag)

    assert result.state == "success"
    assert result.task_states == {"wait": "success"}
    assert "running trigger in line" in result.task_log("wait")


DAG_FILE = """
import pendulum
from airflow.providers.common.compat.sdk import DAG, task

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:

    @task
    def hello(dag_run=None):
        return {{"file": "{dag_id}", "conf": dict(dag_run.conf)}}

    hello()
"""


@pytest.mark.usefixtures("airflow_db")
def test_two_dag_files_by_dag_id_in_one_session(dag_file):
    dag_file(DAG_FILE.format(dag_id="infra_file_one"))
    dag_file(DAG_FILE.format(dag_id="infra_file_two"))

    one = run_dag("infra_file_one", run_conf={"k": 1})
    two = run_dag("infra_file_two")
    one_again = run_dag("infra_file_one", run_conf={"k": 2})

    assert one.xcom("hello") == {"file": "infra_file_one", "conf": {"k": 1}}
    assert two.xcom("hello") == {"file": "infra_file_two", "conf": {}}
    assert one_again.xcom("hello") == {"file": "infra_file_one", "conf": {"k": 2}}
    assert one.run_id != one_again.run_id
    # the snapshot of the first run is unaffected by later runs
    assert one.xcom("hello")["conf"] == {"k": 1}


@pytest.mark.usefixtures("airflow_db")
def test_fixed_logical_date(dag_file):
    dag_file(DAG_FILE.format(dag_id="infra_logical_date"))
    when = pendulum.datetime(2025, 3, 4, 5, 6, tz="UTC")
    result = run_dag("infra_logical_date", logical_date=when)
    assert result.logical_date == when
    assert result.state == "success"
    # same logical date again: dag.test() replaces the earlier run; the old snapshot stays readable
    again = run_dag("infra_logical_date", logical_date=when, run_conf={"x": 1})
    assert again.xcom("hello")["conf"] == {"x": 1}
    assert result.xcom("hello")["conf"] == {}


@pytest.mark.usefixtures("airflow_db")
def test_missing_dag_and_import_errors_fail_clearly(dag_file):
    dag_file(
        "from airflow.providers.common.compat.sdk import DAG\nraise ImportError('BROKEN-DAG-FILE')\n",
        name="infra_broken.py",
    )
    with pytest.raises(DagLoadError) as excinfo:
        run_dag("infra_no_such_dag")
    message = str(excinfo.value)
    assert "'infra_no_such_dag' not found" in message
    assert "infra_broken.py" in message
    assert "BROKEN-DAG-FILE" in message


@pytest.mark.usefixtures("airflow_db")
def test_secrets_masked_in_rendered_fields_but_not_in_dag_test_logs(monkeypatch):
    """Pins an Airflow 3.3 fact the secret-leak tests depend on (see tests/dagrun.py)."""
    from airflow.providers.common.compat.sdk import DAG
    from airflow.providers.standard.operators.python import PythonOperator

    secret = "PW-SECRET-b7f3e1"
    monkeypatch.setenv(
        "AIRFLOW_CONN_INFRA_CONN", json.dumps({"conn_type": "http", "host": "h", "password": secret})
    )

    def use(password):
        print("task saw", password)

    with DAG("infra_secrets", schedule=None, start_date=START) as dag:
        PythonOperator(
            task_id="use", python_callable=use, op_kwargs={"password": "{{ conn.infra_conn.password }}"}
        )

    result = run_dag(dag)

    assert result.state == "success"
    assert result.rendered_fields("use")["op_kwargs"] == {"password": "***"}
    # dag.test() runs tasks in-process without the supervisor that masks production task logs:
    # whatever a task prints or logs reaches result.log / capsys verbatim.
    assert result.leaks(secret) == ["log"]

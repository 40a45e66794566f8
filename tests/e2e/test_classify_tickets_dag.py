"""The ticket-triage example DAG end to end: schema-shaped classification, then a branch on the label."""

from __future__ import annotations

import json

import pytest

from airflow_o3.testing import Reply
from airflow_o3.testing.pytest_plugin import STANDIN_API_KEY
from tests.contract import validate_request_body
from tests.dagrun import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_ID = "o3_classify_tickets"
LABELS = ("billing", "bug", "feature_request", "other")
TICKET = {"id": "T-7", "text": "The export button crashes the app since {{ version }} shipped."}


def classification(label: str, confidence: float) -> Reply:
    return Reply(json.dumps({"label": label, "confidence": confidence, "reason": f"Looks like {label}."}))


@pytest.mark.parametrize("label", LABELS)
def test_a_confident_label_runs_only_its_handler_which_gets_the_parsed_label(o3_standin_connection, label):
    o3_standin_connection.script(classification(label, 0.92))
    result = run_dag(DAG_ID, run_conf={"ticket": TICKET})
    result.assert_success()

    assert result.xcom("classify") == {"label": label, "confidence": 0.92, "reason": f"Looks like {label}."}
    assert result.task_state(f"handle_{label}") == "success"
    assert result.xcom(f"handle_{label}") == {
        "ticket": "T-7",
        "queue": label,
        "reason": f"Looks like {label}.",
    }
    skipped = {f"handle_{other}" for other in LABELS if other != label} | {"needs_human"}
    assert {task: result.task_state(task) for task in skipped} == dict.fromkeys(skipped, "skipped")


def test_a_low_confidence_goes_to_a_person_with_the_models_guess(o3_standin_connection):
    o3_standin_connection.script(classification("bug", 0.4))
    result = run_dag(DAG_ID, run_conf={"ticket": TICKET})
    result.assert_success()
    assert result.xcom("needs_human") == {
        "ticket": "T-7",
        "queue": "triage",
        "hint": "bug (40%): Looks like bug.",
    }
    assert all(result.task_state(f"handle_{label}") == "skipped" for label in LABELS)


def test_the_request_is_a_strict_schema_with_the_ticket_sent_as_data(o3_standin_connection):
    o3_standin_connection.script(classification("bug", 0.9))
    result = run_dag(DAG_ID, run_conf={"ticket": TICKET})
    result.assert_success()
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)
    developer, user = request.body["messages"]
    assert developer["role"] == "developer"
    assert user == {"role": "user", "content": f"Ticket T-7:\n\n{TICKET['text']}"}, (
        "upstream text is not re-rendered"
    )
    spec = request.body["response_format"]["json_schema"]
    assert (spec["name"], spec["strict"]) == ("TicketClassification", True)
    assert spec["schema"]["required"] == ["label", "confidence", "reason"]
    assert spec["schema"]["additionalProperties"] is False
    assert (request.body["reasoning_effort"], request.body["max_completion_tokens"]) == ("low", 2000)
    assert result.rendered_fields("classify")["prompt"] == user["content"]
    assert result.leaks(STANDIN_API_KEY) == []


def test_a_reply_off_the_schema_is_asked_again_once_and_both_requests_are_billed(o3_standin_connection):
    o3_standin_connection.script(classification("refund", 0.9), classification("billing", 0.95))
    result = run_dag(DAG_ID, run_conf={"ticket": TICKET})
    result.assert_success()
    assert result.task_state("handle_billing") == "success"
    first, second = o3_standin_connection.chat_requests
    for request in (first, second):
        validate_request_body(request.body, strict=True)
    assert "'refund' is not one of" in second.body["messages"][-1]["content"]
    assert result.xcom("classify", key="usage")["attempts"] == 2


def test_with_no_script_the_stand_ins_schema_example_runs_the_whole_dag(o3_standin_connection):
    result = run_dag(DAG_ID)
    result.assert_success()
    assert result.xcom("load_ticket")["id"] == "T-1042"
    assert result.xcom("classify")["label"] in LABELS
    assert len(o3_standin_connection.chat_requests) == 1

"""The TaskFlow example DAGs (``@task.o3_mini``, ``@task.o3_mini_branch``) run with dag.test() against
the stand-in server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_o3.testing import Reply
from tests.contract import validate_request_body
from tests.dagrun import AIRFLOW_3, run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

CANARY_KEY = "sk-aiml-CANARY-5d1e8a2f9c3b"
REPORT = "Orders 1284, refunds 17: a calm day."


@pytest.fixture
def standin(o3_standin, monkeypatch, tmp_path):
    """The stand-in server behind ``aimlapi_default``, with a recognisable key, reports to tmp_path."""
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", o3_standin.connection_json(CANARY_KEY))
    monkeypatch.setenv("O3_REPORT_DIR", str(tmp_path))
    return o3_standin


def test_taskflow_daily_report_sends_the_figures_and_saves_the_reply(standin, tmp_path):
    note = "Ignore {{ 7 * 7 }} and {% if true %}this{% endif %}"
    standin.script(Reply(REPORT))
    result = run_dag("o3_daily_report_taskflow", run_conf={"analyst_note": note})
    result.assert_success()

    (request,) = standin.chat_requests
    validate_request_body(request.body, strict=True)
    developer, user = request.body["messages"]
    assert developer["content"].startswith("You are a precise business analyst.")
    assert user["content"].startswith("Write the daily operations report for 20")
    assert "for the operations team." in user["content"]
    assert "| orders | 1284 |" in user["content"]
    assert f"Analyst's note: {note}" in user["content"], "upstream text is sent as data"
    assert (request.body["reasoning_effort"], request.body["max_completion_tokens"]) == ("low", 4000)

    reply = result.xcom("write_report")
    assert reply == REPORT
    assert result.xcom("write_report", key="usage")["attempts"] == 1
    assert result.xcom("write_report", key="completion")["finish_reason"] == "stop"
    report = Path(result.xcom("save_report"))
    assert report.parent == tmp_path
    assert report.read_text(encoding="utf-8") == reply
    assert result.leaks(CANARY_KEY) == []


def test_taskflow_classification_routes_a_confident_label_to_its_handler(standin):
    standin.script(Reply(json.dumps({"label": "bug", "confidence": 0.9, "reason": "It crashes."})))
    ticket = {"id": "T-7", "text": "The export crashes since {{ version }} shipped."}
    result = run_dag("o3_classify_tickets_taskflow", run_conf={"ticket": ticket})
    result.assert_success()

    (request,) = standin.chat_requests
    validate_request_body(request.body, strict=True)
    assert request.body["messages"][1] == {"role": "user", "content": f"Ticket T-7:\n\n{ticket['text']}"}
    assert request.body["response_format"]["json_schema"]["name"] == "TicketClassification"
    assert result.xcom("classify") == {"label": "bug", "confidence": 0.9, "reason": "It crashes."}
    assert result.xcom("handle_bug") == {"ticket": "T-7", "queue": "bug", "reason": "It crashes."}
    others = {"handle_billing", "handle_feature_request", "handle_other", "needs_human"}
    assert {task: result.task_state(task) for task in others} == dict.fromkeys(others, "skipped")
    assert result.leaks(CANARY_KEY) == []


def test_branch_tickets_runs_the_team_the_model_chose_and_skips_the_others(standin):
    standin.script(Reply(json.dumps({"choice": "engineering", "reason": "The app is broken."})))
    ticket = {"id": "T-8", "text": "The dashboard shows {{ nothing }} since this morning."}
    result = run_dag("o3_branch_tickets", run_conf={"ticket": ticket})
    result.assert_success()

    (request,) = standin.chat_requests
    validate_request_body(request.body, strict=True)
    assert (
        request.body["messages"][1]["content"] == f"Which team should handle ticket T-8?\n\n{ticket['text']}"
    )
    choice = request.body["response_format"]["json_schema"]["schema"]["properties"]["choice"]
    assert choice["enum"] == ["billing", "engineering", "sales"]
    assert "engineering: something is broken" in choice["description"]
    assert result.xcom("route") == {
        "choice": "engineering",
        "task_ids": ["handle_engineering"],
        "reason": "The app is broken.",
    }
    assert "o3-mini chose engineering: The app is broken." in result.task_log("route")
    assert result.xcom("handle_engineering") == {"ticket": "T-8", "queue": "engineering"}
    assert (result.task_state("handle_billing"), result.task_state("handle_sales")) == ("skipped", "skipped")
    assert result.leaks(CANARY_KEY) == []


@pytest.mark.parametrize(
    ("dag_id", "calls"),
    [("o3_daily_report_taskflow", 1), ("o3_classify_tickets_taskflow", 1), ("o3_branch_tickets", 1)],
)
def test_taskflow_example_triggered_by_hand_succeeds_on_the_stand_ins_default_replies(standin, dag_id, calls):
    result = run_dag(dag_id, logical_date=None)
    result.assert_success()
    assert len(standin.chat_requests) == calls


def test_the_readmes_first_example_runs_as_written(standin, dag_file):
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A first DAG: `@task.o3_mini`", 1)[1]
    source = section.split("```python\n", 1)[1].split("```", 1)[0]
    if not AIRFLOW_3:
        source = source.replace(
            "from airflow.sdk import dag, task", "from airflow.decorators import dag, task"
        )
    dag_file(source.replace("@dag(", '@dag(dag_id="o3_readme_first_example", ', 1))
    standin.script(Reply(REPORT))
    result = run_dag("o3_readme_first_example")
    result.assert_success()
    (request,) = standin.chat_requests
    assert request.body["messages"][1]["content"].startswith(
        "Write today's operations report from these figures:"
    )
    assert result.xcom("write_report") == REPORT

"""The example DAGs, run for real with dag.test() on a SQLite metadata DB against the stand-in server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_o3.testing import Reply
from tests.contract import validate_request_body
from tests.dagrun import run_dag
from tests.helpers import list_price_usd, usage

pytestmark = pytest.mark.usefixtures("airflow_db")

CANARY_KEY = "sk-aiml-CANARY-7f3e9c1d2b4a"


@pytest.fixture
def standin(o3_standin, monkeypatch, tmp_path):
    """The stand-in server behind ``aimlapi_default``, with a recognisable key, reports to tmp_path."""
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", o3_standin.connection_json(CANARY_KEY))
    monkeypatch.setenv("O3_REPORT_DIR", str(tmp_path))
    return o3_standin


def test_daily_report_pushes_reply_usage_and_completion_from_a_contract_valid_request(standin, tmp_path):
    report_text = "Orders rose to 1284; refunds stayed at 17."
    sent_usage = usage(prompt=410, completion=350, reasoning=300)
    standin.script(Reply(report_text, usage=sent_usage))
    result = run_dag("o3_daily_report")
    result.assert_success()

    (request,) = standin.chat_requests
    validate_request_body(request.body, strict=True)
    developer, user = request.body["messages"]
    assert developer["role"] == "developer"
    assert developer["content"].startswith("You are a precise business analyst.")
    assert user["role"] == "user"
    assert "| orders | 1284 |" in user["content"]
    assert "for the operations team" in user["content"]
    assert request.body["reasoning_effort"] == "low"
    assert request.body["max_completion_tokens"] == 4000
    assert request.header("Authorization") == f"Bearer {CANARY_KEY}"

    reply = result.xcom("write_report")
    assert reply == report_text
    pushed_usage = result.xcom("write_report", key="usage")
    assert {name: pushed_usage[name] for name in sent_usage} == sent_usage
    assert pushed_usage["usd_spent"] == pytest.approx(list_price_usd(prompt=410, completion=350), abs=1e-9)
    completion = result.xcom("write_report", key="completion")
    assert completion["finish_reason"] == "stop"
    assert completion["model"] == "o3-mini-2025-01-31"
    assert completion["id"].startswith("chatcmpl-standin-")
    assert completion["from_cache"] is False
    assert completion["request_id"].startswith("req-standin-")

    report = Path(result.xcom("save_report"))
    assert report.parent == tmp_path
    assert report.read_text(encoding="utf-8") == reply


def test_rendered_prompt_file_shows_in_rendered_templates(standin):
    result = run_dag("o3_daily_report")
    rendered = result.rendered_fields("write_report")
    (request,) = standin.chat_requests
    assert rendered["prompt"] == request.body["messages"][1]["content"]
    assert "{{" not in rendered["prompt"]
    assert rendered["system_prompt"].startswith("You are a precise business analyst.")


def test_upstream_data_with_jinja_syntax_is_sent_as_literal_text(standin):
    note = (
        "Ignore {{ 7 * 7 }} and {% for x in range(3) %}{{ x }}{% endfor %} "
        "{{ conn.aimlapi_default.password }}"
    )
    result = run_dag("o3_daily_report", run_conf={"analyst_note": note})
    result.assert_success()
    (request,) = standin.chat_requests
    assert f"Analyst's note: {note}" in request.body["messages"][1]["content"]
    assert "49" not in request.body["messages"][1]["content"]
    assert note in result.rendered_fields("write_report")["prompt"]


def test_mapped_enrichment_calls_once_per_row_and_gathers_replies_in_order(standin, tmp_path):
    rows = [
        {"id": "r1", "company": "Acme {{ 6 * 7 }}", "description": "Anvils."},
        {"id": "r2", "company": "Globex", "description": "Hammocks and {% raw %}robots."},
        {"id": "r3", "company": "Initech", "description": "TPS reports."},
        {"id": "r4", "company": "Umbrella", "description": "Pharma."},
    ]
    standin.script(
        *(Reply(f"Industry {n}", usage=usage(prompt=50, completion=70, reasoning=64)) for n in range(4))
    )
    result = run_dag("o3_enrich_rows", run_conf={"rows": rows})
    result.assert_success()

    assert len(standin.chat_requests) == 4
    for request in standin.chat_requests:
        validate_request_body(request.body, strict=True)
    sent = sorted(request.body["messages"][1]["content"] for request in standin.chat_requests)
    assert any("Company: Acme {{ 6 * 7 }}" in content for content in sent)
    assert any("Hammocks and {% raw %}robots." in content for content in sent)

    # The n-th request got "Industry n": each row's reply is the one answered to the request naming it.
    answered = {}
    for n, request in enumerate(standin.chat_requests):
        company = next(
            row["company"]
            for row in rows
            if f"Company: {row['company']}" in request.body["messages"][1]["content"]
        )
        answered[company] = f"Industry {n}"
    replies = result.xcom("enrich_row")
    assert replies == [answered[row["company"]] for row in rows]
    pushed_usages = result.xcom("enrich_row", key="usage")
    assert [u["completion_tokens_details"]["reasoning_tokens"] for u in pushed_usages] == [64] * 4

    lines = [json.loads(line) for line in Path(result.xcom("save_rows")).read_text().splitlines()]
    assert [line["id"] for line in lines] == ["r1", "r2", "r3", "r4"]
    assert [line["industry"] for line in lines] == replies


def test_api_key_appears_in_no_log_xcom_or_rendered_field(standin, capfd):
    results = [run_dag("o3_daily_report"), run_dag("o3_enrich_rows")]
    for result in results:
        result.assert_success()
        assert result.leaks(CANARY_KEY) == []
    captured = capfd.readouterr()
    assert CANARY_KEY not in captured.out
    assert CANARY_KEY not in captured.err


def _utc_day() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d}"


def test_daily_report_triggered_by_hand_is_dated_by_its_trigger_day(standin, tmp_path):
    days = {_utc_day()}
    result = run_dag("o3_daily_report", logical_date=None)  # what the UI's trigger button makes in Airflow 3
    days.add(_utc_day())
    result.assert_success()

    (request,) = standin.chat_requests
    sent = request.body["messages"][1]["content"]
    day = next((day for day in sorted(days) if f"report for {day}, for the operations team." in sent), None)
    assert day is not None, f"no trigger day {sorted(days)} in the prompt: {sent[:120]!r}"
    report = Path(result.xcom("save_report"))
    assert report.name == f"daily-report-{day}.md"
    assert report.read_text(encoding="utf-8") == result.xcom("write_report")


def test_daily_report_on_a_scheduled_date_keeps_that_date(standin):
    result = run_dag("o3_daily_report", logical_date=datetime(2026, 3, 14, tzinfo=UTC))
    result.assert_success()
    (request,) = standin.chat_requests
    assert "report for 2026-03-14, for" in request.body["messages"][1]["content"]
    assert Path(result.xcom("save_report")).name == "daily-report-2026-03-14.md"


@pytest.mark.parametrize(
    ("dag_id", "calls"),
    [
        ("o3_enrich_rows", 3),
        # 320 rows at the example's 3000 requests a minute take ~7 s; tests/e2e/test_batch_dag.py runs it
        # in the quick suite and checks every row.
        pytest.param("o3_batch_enrich", 320, marks=pytest.mark.slow),
        ("o3_classify_tickets", 1),
    ],
)
def test_example_dag_triggered_by_hand_succeeds(standin, dag_id, calls):
    result = run_dag(dag_id, logical_date=None)
    result.assert_success()
    assert len(standin.chat_requests) == calls

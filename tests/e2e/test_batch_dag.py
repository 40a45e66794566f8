"""O3MiniBatchOperator in DAGs run by dag.test(): items from an upstream XCom, rendering, retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_o3.testing import HttpError, Reply
from tests.contract import validate_request_body
from tests.dagrun import AIRFLOW_3, run_dag
from tests.test_airflow_cli import airflow_cli

pytestmark = pytest.mark.usefixtures("airflow_db")

KEY = "standin-test-key"


@pytest.fixture
def o3_standin(answering_standin):
    """Every reply names the prompt it answers (``answer_to``), so each reply shows which row it is for."""
    return answering_standin


DAG = """
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG, task
from airflow_o3.operators import O3MiniBatchOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={{"style": "three words"}}):

    @task
    def load_rows():
        note = "{{{{ not a template }}}}"
        return [{{"id": n, "company": f"Company {{n}}", "note": note}} for n in range(20)]

    enrich = O3MiniBatchOperator(
        task_id="enrich",
        items=load_rows(),
        system_prompt="Answer in {{{{ params.style }}}}.",
        prompt="Row {{{{ index }}}}: the industry of {{{{ item.company }}}} ({{{{ item.note }}}})",
        limits={limits!r},
        request_retry={{"max_attempts": 2, "initial_backoff": 0.01, "max_backoff": 0.02}},
        cache={cache!r},
        retries=1,
        retry_delay=timedelta(0),
        progress_interval=0.05,
    )

    @task
    def save(replies):
        return {{"replies": len(replies), "answered": sum(reply is not None for reply in replies)}}

    save(enrich.output)
"""


def dag_source(dag_id: str, *, limits: dict | None = None, cache: object = "off") -> str:
    return DAG.format(dag_id=dag_id, limits=limits or {"max_concurrency": 8}, cache=cache)


def test_batch_enriches_an_upstream_list_in_order(dag_file, o3_standin_connection):
    dag_file(dag_source("o3_batch_e2e"))
    result = run_dag("o3_batch_e2e")
    result.assert_success()
    replies = result.xcom("enrich")
    assert replies == [
        f"Answer to: Row {n}: the industry of Company {n} ({{{{ not a template }}}})" for n in range(20)
    ]
    assert result.xcom("save") == {"replies": 20, "answered": 20}
    assert result.xcom("enrich", key="errors") == []
    assert len(result.xcom("enrich", key="usage_per_item")) == 20
    assert result.xcom("enrich", key="batch")["succeeded"] == 20
    assert result.xcom("enrich", key="usage")["items"] == 20
    assert len(o3_standin_connection.chat_requests) == 20
    assert result.leaks(KEY) == []


def test_rendered_templates_show_the_per_item_templates_and_the_upstream_items(
    dag_file, o3_standin_connection
):
    dag_file(dag_source("o3_batch_rendered"))
    result = run_dag("o3_batch_rendered")
    result.assert_success()
    rendered = result.rendered_fields("enrich")
    assert rendered["prompt"] == "Row {{ index }}: the industry of {{ item.company }} ({{ item.note }})"
    assert rendered["system_prompt"] == "Answer in {{ params.style }}."
    assert "Company 19" in str(rendered["items"])


def test_the_log_shows_progress_lines_not_a_line_per_call(dag_file, o3_standin_connection):
    dag_file(dag_source("o3_batch_log"))
    o3_standin_connection.latency = 0.05
    result = run_dag("o3_batch_log")
    result.assert_success()
    log = result.task_log("enrich")
    assert "Batch finished: 20/20 items done (0 failed)" in log
    assert "items/s, ETA" in log
    assert "o3-mini call:" not in log, "per-call summary lines are DEBUG in a batch"


def test_an_airflow_retry_of_a_stopped_batch_pays_only_for_the_items_that_did_not_complete(
    dag_file, o3_standin_connection, tmp_path
):
    dag_file(
        dag_source(
            "o3_batch_resume", limits={"max_concurrency": 1}, cache={"mode": "on", "path": str(tmp_path)}
        )
    )
    o3_standin_connection.script(Reply("r0"), Reply("r1"), Reply("r2"), HttpError(503), HttpError(503))
    result = run_dag("o3_batch_resume")
    result.assert_success()
    assert result.try_number("enrich") == 2
    assert "item 3 of 20 failed: ServerError (HTTP 503)" in result.task_log("enrich")
    assert result.xcom("enrich")[:3] == ["r0", "r1", "r2"]
    summary = result.xcom("enrich", key="batch")
    assert summary["from_cache"] == 3
    assert summary["spend"]["requests"] == 17
    assert o3_standin_connection.stats["delivered"] == 20, "every item was paid for exactly once"


@pytest.mark.parametrize("native", [False, True])
def test_items_given_as_a_list_or_a_template_are_data_never_rendered(dag_file, o3_standin_connection, native):
    dag_file(
        f"""
        import pendulum
        from airflow.providers.common.compat.sdk import DAG
        from airflow_o3.operators import O3MiniBatchOperator

        with DAG(dag_id="o3_batch_literal_{native}", schedule=None,
                 start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), render_template_as_native_obj={native},
                 params={{"rows": [{{"note": "{{{{ 6 * 7 }}}} from params"}}]}}):
            O3MiniBatchOperator(task_id="literal", items=[{{"note": "{{{{ 7 * 6 }}}} as typed"}}],
                                prompt="Note: {{{{ item.note }}}}")
            if {native}:
                O3MiniBatchOperator(task_id="templated", items="{{{{ params.rows }}}}",
                                    prompt="Note: {{{{ item.note }}}}")
        """
    )
    result = run_dag(f"o3_batch_literal_{native}")
    result.assert_success()
    sent = sorted(request.body["messages"][0]["content"] for request in o3_standin_connection.chat_requests)
    expected = ["Note: {{ 7 * 6 }} as typed"] + (["Note: {{ 6 * 7 }} from params"] if native else [])
    assert sent == sorted(expected)
    assert result.rendered_fields("literal")["items"] == [{"note": "{{ 7 * 6 }} as typed"}]


@pytest.mark.slow  # starts the airflow CLI (~3 s)
def test_airflow_tasks_render_shows_the_template_and_the_items(
    dag_file, test_dags_folder, o3_standin_connection
):
    dag_file(
        """
        import pendulum
        from airflow.providers.common.compat.sdk import DAG
        from airflow_o3.operators import O3MiniBatchOperator

        with DAG(dag_id="o3_batch_render", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
            O3MiniBatchOperator(
                task_id="enrich",
                items=[{"name": "Acme"}, {"name": "Globex"}],
                prompt="Industry of {{ item.name }}, row {{ index }}, run of {{ ds }}?",
            )
        """,
        name="o3_batch_render.py",
    )
    run_dag("o3_batch_render").assert_success()
    subdir = () if AIRFLOW_3 else ("--subdir", str(test_dags_folder))
    out = airflow_cli("tasks", "render", "o3_batch_render", "enrich", "2026-03-04", *subdir)
    assert "Industry of {{ item.name }}, row {{ index }}, run of {{ ds }}?" in out
    assert "Globex" in out


@pytest.mark.slow  # 320 rows through the example DAG
def test_the_example_dag_enriches_320_rows_and_writes_them_in_order(
    o3_standin_connection, monkeypatch, tmp_path
):
    monkeypatch.setenv("O3_REPORT_DIR", str(tmp_path))
    o3_standin_connection.script(HttpError(400, "this row is refused"))
    result = run_dag("o3_batch_enrich")
    result.assert_success()
    requests = o3_standin_connection.chat_requests
    assert len(requests) == 320
    for request in requests[:5]:
        validate_request_body(request.body, strict=True)
        assert request.body["reasoning_effort"] == "low"
    lines = [json.loads(line) for line in Path(result.xcom("save_rows")).read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"c-{n}" for n in range(320)]
    failed = [line for line in lines if line["industry"] is None]
    assert len(failed) == 1 and "this row is refused" in failed[0]["error"]
    done = [line for line in lines if line["industry"] is not None]
    assert all(
        line["industry"].startswith("Answer to: ")
        and line["industry"].endswith(f"Company: {line['company']}\nDescription: {line['description']}")
        for line in done
    )
    assert result.xcom("enrich", key="batch")["succeeded"] == 319

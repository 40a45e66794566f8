"""Daily report: an upstream task gathers figures, a prompt file turns them into a request, o3-mini
writes the report, and the last task saves it to a file.

Runs on the real service with an ``aimlapi_default`` connection holding your key, or on the stand-in
server (``python -m airflow_o3.testing`` prints the connection to export).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_o3.operators import O3MiniOperator

PROMPTS = Path(__file__).parent / "prompts"

with DAG(
    dag_id="o3_daily_report",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    template_searchpath=[str(PROMPTS)],
    params={"audience": "the operations team"},
    tags=["airflow-o3", "example"],
) as dag:

    @task
    def collect_figures(ds: str | None = None, dag_run: object = None) -> dict[str, object]:
        """Yesterday's figures; a real DAG would query a warehouse here."""
        conf = getattr(dag_run, "conf", None) or {}
        return {
            "date": ds,
            "orders": 1284,
            "revenue_eur": 53210.40,
            "refunds": 17,
            "top_region": "EMEA",
            "analyst_note": conf.get("analyst_note", "Checkout latency rose after the 14:00 deploy."),
        }

    write_report = O3MiniOperator(
        task_id="write_report",
        system_prompt="You are a precise business analyst. Answer in Markdown, at most 150 words.",
        prompt="daily_report.md.j2",
        reasoning_effort="low",
        max_completion_tokens=4000,
    )

    @task
    def save_report(report: str, ds: str | None = None) -> str:
        """Write the report where the team reads it."""
        folder = Path(
            os.environ.get("O3_REPORT_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "reports"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"daily-report-{ds}.md"
        path.write_text(report, encoding="utf-8")
        return str(path)

    collect_figures() >> write_report
    save_report(write_report.output)

"""Daily report: an upstream task gathers figures, a prompt file turns them into a request, o3-mini
writes the report, and the last task saves it to a file.

Runs on the real service with an ``aimlapi_default`` connection holding your key, or on the stand-in
server (``python -m airflow_o3.testing`` prints the connection to export). It runs from its schedule,
from ``airflow dags test`` and from a manual trigger: Airflow 3 gives a manual run no logical date (so
no ``ds``), and the report is then dated by the day the run was triggered (``dag_run.run_after``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    def collect_figures(ds: str | None = None, dag_run: Any = None) -> dict[str, object]:
        """The day's figures; a real DAG would query a warehouse here.

        ``date`` is the run's logical date, or for a manual run without one the day it was triggered;
        the prompt and the report's file name both use it.
        """
        conf = getattr(dag_run, "conf", None) or {}
        return {
            "date": ds or f"{dag_run.run_after:%Y-%m-%d}",
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
    def save_report(report: str, figures: dict[str, Any]) -> str:
        """Write the report where the team reads it, named by the day it is for."""
        folder = Path(
            os.environ.get("O3_REPORT_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "reports"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"daily-report-{figures['date']}.md"
        path.write_text(report, encoding="utf-8")
        return str(path)

    figures = collect_figures()
    figures >> write_report
    save_report(write_report.output, figures)

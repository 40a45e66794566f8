"""Daily report in TaskFlow style: the same report as ``o3_daily_report``, written with ``@task.o3_mini``.

``collect_figures`` gathers the day's figures; ``write_report`` receives them as an ordinary argument
(TaskFlow makes it wait for them) and returns the prompt, which o3-mini answers; ``save_report`` writes
the reply to a file. The prompt is built in Python and sent as it is: figures or notes holding ``{{``
are never rendered as templates.

Runs on the real service with an ``aimlapi_default`` connection holding your key, or on the stand-in
server (``python -m airflow_o3.testing`` prints the connection to export).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import dag, task


@dag(
    dag_id="o3_daily_report_taskflow",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"audience": "the operations team"},
    tags=["airflow-o3", "example", "taskflow"],
)
def o3_daily_report_taskflow() -> None:
    @task
    def collect_figures(ds: str | None = None, dag_run: Any = None) -> dict[str, object]:
        """The day's figures; a real DAG would query a warehouse here. A manual run without a
        logical date is dated by the day it was triggered."""
        conf = getattr(dag_run, "conf", None) or {}
        return {
            "date": ds or f"{dag_run.run_after:%Y-%m-%d}",
            "orders": 1284,
            "revenue_eur": 53210.40,
            "refunds": 17,
            "top_region": "EMEA",
            "analyst_note": conf.get("analyst_note", "Checkout latency rose after the 14:00 deploy."),
        }

    @task.o3_mini(
        system_prompt="You are a precise business analyst. Answer in Markdown, at most 150 words.",
        reasoning_effort="low",
        max_completion_tokens=4000,
    )
    def write_report(figures: dict[str, Any], params: dict[str, Any] | None = None) -> str:
        """The prompt: the figures as a Markdown table, for the audience in the DAG's params."""
        audience = (params or {}).get("audience", "the operations team")
        rows = "\n".join(f"| {name} | {value} |" for name, value in figures.items() if name != "analyst_note")
        return (
            f"Write the daily operations report for {figures['date']}, for {audience}.\n\n"
            f"| figure | value |\n| --- | --- |\n{rows}\n\n"
            f"Analyst's note: {figures['analyst_note']}\n\n"
            "Say what changed, what needs attention today, and one question to ask the team."
        )

    @task
    def save_report(report: str, figures: dict[str, Any]) -> str:
        """Write the report where the team reads it, named by the day it is for."""
        folder = Path(
            os.environ.get("O3_REPORT_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "reports"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"daily-report-taskflow-{figures['date']}.md"
        path.write_text(report, encoding="utf-8")
        return str(path)

    figures = collect_figures()
    save_report(write_report(figures), figures)


o3_daily_report_taskflow()

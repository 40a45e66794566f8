"""Customer announcement with a person in the loop: o3-mini drafts it, someone approves (or edits, or
rejects) the draft in Airflow's UI, and only an approved text is published.

Trigger a run with the run conf ``{"change": "..."}`` (the change to announce). ``draft`` asks
o3-mini, then waits in the ``awaiting_input`` state, holding no worker slot, until someone answers in
Browse > Required Actions (or the task's "Required Actions" tab): Approve passes the draft on,
editing the ``reply`` field first passes the edit on instead, Reject skips ``publish``. Nobody
answering within four hours counts as Reject. The draft is paid for once, whatever the answer.

Needs Airflow 3.1 or later (human-in-the-loop); on Airflow 2 the DAG fails to parse, saying so.
Runs on the real service with an ``aimlapi_default`` connection holding your key, or on the stand-in
server (``python -m airflow_o3.testing`` prints the connection to export).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_o3.operators import O3MiniOperator

with DAG(
    dag_id="o3_approval",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"change": "Invoices can now be downloaded as PDF from the billing page."},
    tags=["airflow-o3", "example"],
) as dag:
    draft = O3MiniOperator(
        task_id="draft",
        system_prompt="You write short, friendly product announcements in Markdown, at most 80 words.",
        prompt="Announce this change to our customers: {{ params.change }}",
        reasoning_effort="low",
        max_completion_tokens=4000,
        require_approval=True,
        approval_timeout=timedelta(hours=4),
    )

    @task
    def publish(announcement: str, run_id: str | None = None) -> str:
        """Publish the approved announcement; a real DAG would post it to the website or a mailer."""
        folder = Path(
            os.environ.get("O3_REPORT_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "reports"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"announcement-{(run_id or 'manual').replace(':', '_')}.md"
        path.write_text(announcement, encoding="utf-8")
        return str(path)

    publish(draft.output)

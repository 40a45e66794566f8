"""Row enrichment with dynamic task mapping: one o3-mini call per row, results gathered to a file.

Mapping costs a task instance per row; for hundreds of rows or more prefer the batch operator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_o3.operators import O3MiniOperator

with DAG(
    dag_id="o3_enrich_rows",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-o3", "example"],
) as dag:

    @task
    def load_rows(dag_run: object = None) -> list[dict[str, str]]:
        """The rows to enrich; a real DAG would read them from a table or a file."""
        conf = getattr(dag_run, "conf", None) or {}
        return conf.get("rows") or [
            {"id": "c-1", "company": "Acme Anvils", "description": "Drop-forged anvils for cartoon use."},
            {"id": "c-2", "company": "Globex", "description": "Energy, robotics and hammock retail."},
            {"id": "c-3", "company": "Initech", "description": "TPS report software and consulting."},
        ]

    @task
    def build_prompts(rows: list[dict[str, str]]) -> list[str]:
        """One prompt per row; the row is data, so it is formatted here and never templated."""
        return [
            f"Give the industry of this company in at most three words.\n"
            f"Company: {row['company']}\nDescription: {row['description']}"
            for row in rows
        ]

    rows = load_rows()
    enrich = O3MiniOperator.partial(
        task_id="enrich_row",
        system_prompt="Answer with the industry only.",
        reasoning_effort="low",
        max_completion_tokens=2000,
    ).expand(prompt=build_prompts(rows))

    @task
    def save_rows(rows: list[dict[str, str]], industries: list[str], run_id: str | None = None) -> str:
        """Join each reply to its row and write JSON lines."""
        folder = Path(
            os.environ.get("O3_REPORT_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "reports"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "enriched-rows.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for row, industry in zip(rows, industries, strict=True):
                out.write(json.dumps({**row, "industry": industry}) + "\n")
        return str(path)

    save_rows(rows, enrich.output)

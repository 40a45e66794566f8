"""Row enrichment with the batch operator: a few hundred o3-mini calls from one task, results to a file.

Compared with ``o3_enrich_rows`` (one mapped task instance per row), this is one task: the prompt is
rendered per row, the calls run 32 at a time under one rate controller, a cost budget stops it short
of overspending, a failed row is recorded instead of failing the run, and with the response cache on
a retry pays only for the rows that did not complete. Pass your own rows with
``--conf '{"rows": [{"id": ..., "company": ..., "description": ...}]}'``.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_o3.operators import O3MiniBatchOperator

COMPANIES = [
    ("Acme Anvils", "Drop-forged anvils and rocket skates for cartoon use."),
    ("Globex", "Energy, robotics and hammock retail."),
    ("Initech", "TPS report software and consulting."),
    ("Umbrella", "Pharmaceuticals and, reportedly, bio-weapons research."),
    ("Hooli", "Search, compression middleware and a phone nobody bought."),
    ("Soylent", "Meal-replacement drinks from undisclosed ingredients."),
    ("Stark Industries", "Defense contracting turned clean-energy research."),
    ("Wonka", "Confectionery, with a factory that gives tours."),
]

with DAG(
    dag_id="o3_batch_enrich",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-o3", "example"],
) as dag:

    @task
    def load_rows(dag_run: object = None) -> list[dict[str, str]]:
        """The rows to enrich: the run's conf, else 320 sample rows (a real DAG reads a table or a file)."""
        conf = getattr(dag_run, "conf", None) or {}
        if conf.get("rows"):
            return list(conf["rows"])
        return [
            {"id": f"c-{n}", "company": f"{name} #{n}", "description": description}
            for n in range(320)
            for name, description in [COMPANIES[n % len(COMPANIES)]]
        ]

    rows = load_rows()
    enrich = O3MiniBatchOperator(
        task_id="enrich",
        items=rows,
        system_prompt="Answer with the industry only, in at most three words.",
        prompt="Company: {{ item.company }}\nDescription: {{ item.description }}",
        reasoning_effort="low",
        max_completion_tokens=2000,
        limits={"max_concurrency": 32, "requests_per_minute": 3000},
        budget={"max_cost_usd": 5.0, "on_exceeded": "stop"},
        on_item_error="continue",
        cache="on",
        retries=2,
        retry_delay=timedelta(minutes=1),
    )

    @task
    def save_rows(rows: list[dict[str, str]], industries: list[str | None], ti: object = None) -> str:
        """Join each reply to its row and write JSON lines; a row without a reply carries its error."""
        errors = {error["index"]: error["message"] for error in ti.xcom_pull(task_ids="enrich", key="errors")}
        folder = Path(
            os.environ.get("O3_REPORT_DIR") or Path(os.environ.get("AIRFLOW_HOME", ".")) / "reports"
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "enriched-rows-batch.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for index, (row, industry) in enumerate(zip(rows, industries, strict=True)):
                out.write(json.dumps({**row, "industry": industry, "error": errors.get(index)}) + "\n")
        return str(path)

    save_rows(rows, enrich.output)

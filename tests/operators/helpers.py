"""Helpers for operator tests: a stub task instance for direct ``execute`` calls, and small DAG files."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

USER = "Classify: the invoice was charged twice."

TICKET_SCHEMA: dict[str, Any] = {
    "title": "Ticket classification",
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["billing", "bug", "feature_request", "other"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
}


DAG_HEADER = """\
import pendulum
from airflow.providers.common.compat.sdk import DAG, task
from airflow_o3.operators import O3MiniOperator

TICKET_SCHEMA = {schema!r}

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={{"ticket": "The invoice was charged twice."}}) as dag:
"""


def dag_with(dag_file: Callable[..., Path], dag_id: str, body: str) -> str:
    """Write a DAG file whose ``with DAG(...)`` block holds ``body``; return its dag_id.

    ``TICKET_SCHEMA``, ``O3MiniOperator``, ``task`` and the param ``ticket`` are in scope.
    """
    indented = textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")
    dag_file(DAG_HEADER.format(dag_id=dag_id, schema=TICKET_SCHEMA) + indented)
    return dag_id


def import_error(path: Path) -> str:
    """Parse one DAG file as Airflow's DAG processor does; return its import error ("" when none)."""
    from tests.dagrun import AIRFLOW_3

    if AIRFLOW_3:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=path, bundle_path=path.parent, bundle_name="test-dags")
    else:
        from airflow.models.dagbag import DagBag as DagBag2

        bag = DagBag2(dag_folder=str(path), include_examples=False)
    return "\n".join(bag.import_errors.values())


def error_line(import_error_text: str) -> str:
    """The exception's own line of an import error (its traceback's last non-empty line)."""
    return [line for line in import_error_text.splitlines() if line.strip()][-1]

"""Recorded spend for the spend page's tests: ``usage`` / ``completion`` XCom rows as the tasks write them.

The rows go straight into the ``xcom`` table, without the task instances and runs they would belong
to: SQLite's foreign-key check is off while they are written (only then). The queries under test
read the ``xcom`` table alone.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import pytest

from tests.dagrun import AIRFLOW_3

if TYPE_CHECKING:
    from datetime import datetime

_dag_run_ids = itertools.count(2_000_000_000)

requires_airflow_3 = pytest.mark.skipif(
    not AIRFLOW_3, reason="the spend page reads Airflow 3's JSON XCom table; on Airflow 2 it adds nothing"
)


def usage(
    prompt: int, completion: int, reasoning: int, cached: int = 0, usd: float | None = None, **more: Any
) -> dict[str, Any]:
    """A ``usage`` XCom value as the operator records it (without ``usd_spent`` when ``usd`` is None)."""
    value: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "attempts": 1,
        **more,
    }
    if usd is not None:
        value["usd_spent"] = usd
    return value


def call(
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    when: datetime,
    usage_value: dict[str, Any],
    model: str | None = "o3-mini-2025-01-31",
    map_index: int = -1,
    dag_run_id: int | None = None,
    from_cache: bool = False,
) -> list[dict[str, Any]]:
    """One call's ``usage`` row and, unless ``model`` is None (a batch), its ``completion`` row."""
    common = {
        "dag_run_id": next(_dag_run_ids) if dag_run_id is None else dag_run_id,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "timestamp": when,
        "dag_result": False,
    }
    rows = [{**common, "key": "usage", "value": usage_value}]
    if model is not None:
        completion = {"id": "chatcmpl-1", "model": model, "finish_reason": "stop", "from_cache": from_cache}
        rows.append({**common, "key": "completion", "value": completion})
    return rows


def record(rows: list[dict[str, Any]]) -> None:
    """Write XCom rows (from :func:`call`) in one transaction."""
    from airflow import settings
    from airflow.models.xcom import XComModel
    from sqlalchemy import insert

    with settings.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()  # a PRAGMA inside a transaction is ignored
        try:
            connection.execute(insert(XComModel.__table__), rows)
            connection.commit()
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()

"""The spend page's queries over 100,000 recorded calls: how long the page waits for its figures.

A fresh SQLite metadata database (Airflow's schema, in a temp ``AIRFLOW_HOME``) is seeded directly in
the ``xcom`` table with ``--calls`` o3-mini calls as the tasks record them: a ``usage`` and a
``completion`` row each, plus a ``return_value`` row each (so the table holds three times as many rows
as calls), spread over 90 days, 50 DAGs, runs of 20 calls, a quarter of them mapped, one in twenty
without a reported cost, one in fifty a batch. Then, as the API server does for one page load:
the first load after the API server starts (90 days, every call's JSON read, and the memory the
remembered calls take), then ``SpendQuery.summary()`` for a 7, 30 and 90-day window (median of 5:
the calls are remembered), and the CSV download of 7 days.

Targets: one page load (``summary``) under 1 s, for the page as it opens (7 days) and for the
90-day window that holds every call. Exits 1 when one is not met.
Run: ``.venv/bin/python benchmarks/spend_page.py`` (option: ``--calls``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, quiet, verdict

TARGET_SECONDS = 1.0
DAYS = 90
DAGS = 50
CALLS_PER_RUN = 20


def _usage(rng: random.Random, batch: bool, priced: bool) -> dict[str, Any]:
    prompt, completion = rng.randint(50, 3000), rng.randint(64, 4000)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": rng.choice((0, 0, prompt // 2))},
        "completion_tokens_details": {"reasoning_tokens": completion // 2},
    }
    usage["items" if batch else "attempts"] = rng.randint(10, 500) if batch else 1
    if priced:
        usage["usd_spent"] = round((prompt * 1.1 + completion * 4.4) / 1e6, 8)
    return usage


def _rows(calls: int, now: datetime) -> list[dict[str, Any]]:
    """The XCom rows of ``calls`` recorded calls, three per call."""
    rng = random.Random(13)
    rows: list[dict[str, Any]] = []
    for number in range(calls):
        run, position = divmod(number, CALLS_PER_RUN)
        mapped = run % 4 == 0
        batch = number % 50 == 0
        when = now - timedelta(seconds=rng.uniform(0, DAYS * 86400))
        common = {
            "dag_run_id": run,
            "dag_id": f"dag_{run % DAGS:02d}",
            "run_id": f"scheduled__run_{run}",
            "task_id": "classify" if mapped else f"task_{position}",
            "map_index": position if mapped else -1,
            "timestamp": when,
            "dag_result": False,
        }
        completion = {"id": f"chatcmpl-{number}", "model": "o3-mini-2025-01-31", "finish_reason": "stop"}
        rows.append({**common, "key": "usage", "value": _usage(rng, batch, priced=number % 20 != 0)})
        if not batch:
            rows.append({**common, "key": "completion", "value": completion})
        rows.append({**common, "key": "return_value", "value": f"reply {number} " + "x" * 200})
    return rows


def _seed(calls: int, now: datetime) -> None:
    from airflow import settings
    from airflow.models.xcom import XComModel
    from sqlalchemy import insert

    rows = _rows(calls, now)
    with settings.engine.connect() as connection:
        connection.exec_driver_sql(
            "PRAGMA foreign_keys=OFF"
        )  # rows without their runs: the page reads xcom only
        connection.commit()
        for start in range(0, len(rows), 20_000):
            connection.execute(insert(XComModel.__table__), rows[start : start + 20_000])
        connection.commit()
        connection.exec_driver_sql("ANALYZE")
        connection.commit()


def _time(function: Any, repeat: int) -> tuple[float, Any]:
    timings, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        timings.append(time.perf_counter() - started)
    return median(timings), result


def _cold(session: Any, now: datetime, dag_ids: set[str]) -> dict[str, Any]:
    """A page load with nothing remembered, as the first one after the API server starts."""
    from airflow_o3.plugins.spend_query import RECORDED, SpendQuery, Window

    RECORDED.forget()
    return SpendQuery(session, Window.last(DAYS, now), dag_ids).summary()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    calls = parser.parse_args().calls

    with quiet():
        from airflow.utils.db import initdb
        from airflow.utils.session import create_session

        from airflow_o3.plugins.spend_query import SpendQuery, Window, csv_lines

        initdb()
    now = datetime.now(UTC)
    started = time.perf_counter()
    _seed(calls, now)
    seeded = time.perf_counter() - started
    dag_ids = {f"dag_{number:02d}" for number in range(DAGS)}

    figures: dict[int, tuple[float, dict[str, Any]]] = {}
    with create_session() as session:
        tracemalloc.start()
        first_seconds, _ = _time(lambda: SpendQuery(session, Window.last(DAYS, now), dag_ids).summary(), 1)
        remembered = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        first_seconds, _ = _time(lambda: _cold(session, now, dag_ids), 1)
        for days in (7, 30, DAYS):
            figures[days] = _time(
                lambda d=days: SpendQuery(session, Window.last(d, now), dag_ids).summary(), 5
            )
        csv_seconds, size = _time(
            lambda: sum(
                len(part) for part in csv_lines(SpendQuery(session, Window.last(7, now), dag_ids).calls())
            ),
            1,
        )

    print(f"seeded {calls:,} recorded calls ({calls * 3 - calls // 50:,} XCom rows) in {seeded:.1f} s")
    print(
        f"first load after the API server starts, {DAYS} days (every call's JSON read): "
        f"{first_seconds * 1000:.0f} ms; the calls remembered: {remembered / 1e6:.0f} MB"
    )
    for days, (seconds, summary) in figures.items():
        totals = summary["totals"]
        print(
            f"summary, {days:>2} days: {seconds * 1000:6.0f} ms  "
            f"({totals['calls']:,} calls, {totals['total_tokens']:,} tokens, ${totals['usd_spent']:,.2f})"
        )
    print(f"CSV download, 7 days: {csv_seconds * 1000:.0f} ms ({size / 1e6:.1f} MB)")
    verdicts = []
    for days, what in (
        (7, "the page as it opens (7 days)"),
        (DAYS, f"every call in the window ({DAYS} days)"),
    ):
        seconds = figures[days][0]
        verdicts.append(seconds < TARGET_SECONDS)
        print(f"{what}: {seconds:.3f} s (target < {TARGET_SECONDS} s): {verdict(verdicts[-1])}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The spend page's figures: what the queries add up from recorded ``usage`` and ``completion`` XComs.

Real runs (a DAG with a plain and a mapped o3-mini task, against the stand-in) and rows written as
tasks write them, for the cases the example DAGs do not produce (no cost reported, a batch, days
outside the window, DAGs the user may not read).
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.dagrun import run_dag
from tests.plugins.recorded import call, record, requires_airflow_3, usage

pytestmark = [pytest.mark.usefixtures("airflow_db"), requires_airflow_3]

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)

DAG_SOURCE = """
from airflow.sdk import dag
from airflow_o3.operators.o3mini import O3MiniOperator


@dag(dag_id="{dag_id}", schedule=None)
def spend():
    O3MiniOperator(task_id="summarise", prompt="Summarise the tides of the week")
    O3MiniOperator.partial(task_id="classify").expand(prompt=["ticket one", "ticket two", "ticket three"])


spend()
"""


def _query(dag_ids, days=7, now=NOW):
    from airflow.utils.session import create_session

    from airflow_o3.plugins.spend_query import SpendQuery, Window

    with create_session() as session:
        return SpendQuery(session, Window.last(days, now=now), dag_ids).summary()


def _write(*calls):
    record([row for spec in calls for row in call(**spec)])


def test_a_real_run_is_added_up_per_dag_model_task_and_run_with_links(o3_standin, monkeypatch, dag_file):
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", o3_standin.connection_json("sk-spend-page-3f9a1c"))
    dag_id = f"spend_page_{uuid.uuid4().hex[:8]}"
    dag_file(DAG_SOURCE.format(dag_id=dag_id))
    result = run_dag(dag_id)
    result.assert_success()
    recorded = [result.xcom("summarise", key="usage")] + [
        result.xcom("classify", key="usage", map_index=index) for index in range(3)
    ]

    summary = _query({dag_id}, now=datetime.now(UTC))

    totals = summary["totals"]
    assert totals["calls"] == 4
    assert totals["prompt_tokens"] == sum(u["prompt_tokens"] for u in recorded)
    assert totals["completion_tokens"] == sum(u["completion_tokens"] for u in recorded)
    assert totals["total_tokens"] == sum(u["total_tokens"] for u in recorded)
    assert totals["reasoning_tokens"] == sum(
        u["completion_tokens_details"]["reasoning_tokens"] for u in recorded
    )
    assert totals["cached_tokens"] == sum(u["prompt_tokens_details"]["cached_tokens"] for u in recorded)
    assert totals["usd_spent"] == pytest.approx(sum(u["usd_spent"] for u in recorded))
    assert [row["dag_id"] for row in summary["per_dag"]] == [dag_id]
    model = result.xcom("summarise", key="completion")["model"]
    assert [(row["model"], row["calls"]) for row in summary["per_model"]] == [(model, 4)]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert summary["per_day"][-1]["day"] == today and summary["per_day"][-1]["calls"] == 4

    tasks = {task["task_id"]: task for task in summary["top_tasks"]}
    assert tasks["classify"]["calls"] == 3 and tasks["classify"]["mapped"] is True
    assert tasks["classify"]["usd_spent"] == pytest.approx(sum(u["usd_spent"] for u in recorded[1:]))
    run_id = result.run_id
    from urllib.parse import quote

    run_path = f"/dags/{dag_id}/runs/{quote(run_id, safe='')}"
    assert tasks["classify"]["path"] == f"{run_path}/tasks/classify/mapped"
    assert tasks["summarise"]["path"] == f"{run_path}/tasks/summarise"
    (run,) = summary["top_runs"]
    assert (run["run_id"], run["path"], run["calls"]) == (run_id, run_path, 4)


def test_calls_without_a_reported_cost_keep_their_tokens_and_show_cost_not_reported():
    dag_id = f"spend_unpriced_{uuid.uuid4().hex[:8]}"
    _write(
        {"dag_id": dag_id, "run_id": "r1", "task_id": "a", "when": NOW, "usage_value": usage(100, 50, 20)},
        {"dag_id": dag_id, "run_id": "r1", "task_id": "b", "when": NOW, "usage_value": usage(10, 5, 2)},
    )
    summary = _query({dag_id})
    assert summary["totals"]["usd_spent"] is None
    assert summary["totals"]["calls_without_cost"] == 2
    assert summary["totals"]["total_tokens"] == 165
    assert summary["top_tasks"][0]["task_id"] == "a"  # no dollars anywhere: the most tokens first


def test_a_partly_priced_dag_adds_the_reported_dollars_and_counts_the_others():
    dag_id = f"spend_partly_{uuid.uuid4().hex[:8]}"
    _write(
        {
            "dag_id": dag_id,
            "run_id": "r1",
            "task_id": "a",
            "when": NOW,
            "usage_value": usage(100, 50, 20, usd=0.25),
        },
        {"dag_id": dag_id, "run_id": "r1", "task_id": "b", "when": NOW, "usage_value": usage(10, 5, 2)},
    )
    (row,) = _query({dag_id})["per_dag"]
    assert (row["usd_spent"], row["calls_without_cost"], row["calls"]) == (0.25, 1, 2)


def test_a_reply_from_the_response_cache_counts_as_a_call_that_cost_nothing():
    dag_id = f"spend_cached_{uuid.uuid4().hex[:8]}"
    paid = usage(100, 50, 20, cached=10, usd=0.25)
    _write(
        {"dag_id": dag_id, "run_id": "r1", "task_id": "a", "when": NOW, "usage_value": paid},
        {
            "dag_id": dag_id,
            "run_id": "r2",
            "task_id": "a",
            "when": NOW,
            "usage_value": paid,
            "from_cache": True,
        },
    )
    totals = _query({dag_id})["totals"]
    assert (totals["calls"], totals["usd_spent"], totals["calls_without_cost"]) == (2, 0.25, 0)
    assert (totals["total_tokens"], totals["reasoning_tokens"], totals["cached_tokens"]) == (150, 20, 10)


def test_a_batch_counts_its_replies_and_shows_its_model_as_not_recorded():
    dag_id = f"spend_batch_{uuid.uuid4().hex[:8]}"
    batch_usage = usage(1000, 3000, 2000, cached=400, usd=0.5, items=40)
    batch_usage.pop("attempts")
    _write(
        {
            "dag_id": dag_id,
            "run_id": "r1",
            "task_id": "enrich",
            "when": NOW,
            "usage_value": batch_usage,
            "model": None,
        }
    )
    summary = _query({dag_id})
    assert (summary["totals"]["calls"], summary["totals"]["replies"]) == (1, 40)
    assert summary["totals"]["cached_tokens"] == 400
    assert [row["model"] for row in summary["per_model"]] == ["not recorded"]


def test_another_tasks_xcom_called_usage_is_not_counted_as_o3_spend():
    dag_id = f"spend_foreign_{uuid.uuid4().hex[:8]}"
    _write(
        {
            "dag_id": dag_id,
            "run_id": "r1",
            "task_id": "ours",
            "when": NOW,
            "usage_value": usage(1, 2, 0, usd=0.5),
        },
        {
            "dag_id": dag_id,
            "run_id": "r1",
            "task_id": "disk",
            "when": NOW,
            "usage_value": {"gb": 3},
            "model": None,
        },
    )
    summary = _query({dag_id})
    assert summary["totals"]["calls"] == 1
    assert [task["task_id"] for task in summary["top_tasks"]] == ["ours"]


def test_the_window_keeps_whole_utc_days_and_lists_every_day_oldest_first():
    dag_id = f"spend_window_{uuid.uuid4().hex[:8]}"
    start_of_window = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)  # 7 days ending 2026-11-30
    _write(
        {
            "dag_id": dag_id,
            "run_id": "old",
            "task_id": "a",
            "when": start_of_window - timedelta(seconds=1),
            "usage_value": usage(1, 1, 0, usd=1.0),
        },
        {
            "dag_id": dag_id,
            "run_id": "first",
            "task_id": "a",
            "when": start_of_window,
            "usage_value": usage(1, 1, 0, usd=0.5),
        },
        {
            "dag_id": dag_id,
            "run_id": "today",
            "task_id": "a",
            "when": NOW,
            "usage_value": usage(1, 1, 0, usd=0.25),
        },
    )
    summary = _query({dag_id})
    days = summary["per_day"]
    assert [day["day"] for day in days] == [f"2026-11-{day}" for day in range(24, 31)]
    assert [day["usd_spent"] for day in days] == [0.5, None, None, None, None, None, 0.25]
    assert summary["totals"]["usd_spent"] == 0.75
    assert _query({dag_id}, days=8)["totals"]["usd_spent"] == 1.75


def test_dags_the_user_may_not_read_are_not_read_at_all():
    readable, hidden = f"spend_mine_{uuid.uuid4().hex[:8]}", f"spend_theirs_{uuid.uuid4().hex[:8]}"
    _write(
        {
            "dag_id": readable,
            "run_id": "r",
            "task_id": "a",
            "when": NOW,
            "usage_value": usage(1, 1, 0, usd=0.1),
        },
        {
            "dag_id": hidden,
            "run_id": "r",
            "task_id": "a",
            "when": NOW,
            "usage_value": usage(9, 9, 0, usd=9.0),
        },
    )
    summary = _query({readable})
    assert [row["dag_id"] for row in summary["per_dag"]] == [readable]
    assert summary["totals"]["usd_spent"] == 0.1
    assert hidden not in str(summary)
    empty = _query(set())
    assert empty["totals"]["calls"] == 0 and empty["top_tasks"] == [] and len(empty["per_day"]) == 7


def test_the_csv_has_one_line_per_call_and_quotes_text_a_spreadsheet_would_run():
    from airflow.utils.session import create_session

    from airflow_o3.plugins.spend_query import SpendQuery, Window, csv_lines

    dag_id = f"spend_csv_{uuid.uuid4().hex[:8]}"
    _write(
        {
            "dag_id": dag_id,
            "run_id": "=HYPERLINK(1)",
            "task_id": "a",
            "when": NOW,
            "usage_value": usage(3, 4, 1, usd=0.125),
        },
        {
            "dag_id": dag_id,
            "run_id": "r2",
            "task_id": "b",
            "when": NOW + timedelta(minutes=1),
            "usage_value": usage(5, 6, 2),
            "map_index": 2,
        },
    )
    with create_session() as session:
        text = "".join(csv_lines(SpendQuery(session, Window.last(7, now=NOW), {dag_id}).calls()))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(row["run_id"], row["task_id"], row["map_index"]) for row in rows] == [
        ("'=HYPERLINK(1)", "a", "-1"),
        ("r2", "b", "2"),
    ]
    assert (rows[0]["total_tokens"], rows[0]["usd_spent"], rows[0]["model"]) == (
        "7",
        "0.125",
        "o3-mini-2025-01-31",
    )
    assert rows[1]["usd_spent"] == ""  # not reported


def test_a_window_outside_1_to_366_days_is_refused_naming_the_range():
    from airflow_o3.plugins.spend_query import Window

    with pytest.raises(ValueError, match="days must be a whole number from 1 to 366, not 0"):
        Window.last(0)


def _delete_task_xcoms(dag_run_id):
    """What clearing a task does to its XComs: its rows are deleted (a re-run writes new ones)."""
    from airflow import settings
    from airflow.models.xcom import XComModel
    from sqlalchemy import delete

    with settings.engine.begin() as connection:
        connection.execute(delete(XComModel.__table__).where(XComModel.__table__.c.dag_run_id == dag_run_id))


def test_calls_recorded_after_a_first_page_load_show_up_in_the_next():
    dag_id = f"spend_later_{uuid.uuid4().hex[:8]}"
    first = {
        "dag_id": dag_id,
        "run_id": "r1",
        "task_id": "a",
        "when": NOW,
        "usage_value": usage(1, 1, 0, usd=0.5),
    }
    _write(first)
    assert _query({dag_id})["totals"]["calls"] == 1
    _write(
        {**first, "run_id": "r2", "when": NOW + timedelta(minutes=1), "usage_value": usage(2, 2, 0, usd=0.25)}
    )
    summary = _query({dag_id})
    assert (summary["totals"]["calls"], summary["totals"]["usd_spent"]) == (2, 0.75)
    assert sorted(run["run_id"] for run in summary["top_runs"]) == ["r1", "r2"]


def test_a_re_run_tasks_replaced_xcoms_count_once_with_their_new_figures():
    dag_id = f"spend_rerun_{uuid.uuid4().hex[:8]}"
    task = {"dag_id": dag_id, "run_id": "r1", "task_id": "a", "dag_run_id": 1_900_000_001}
    _write({**task, "when": NOW - timedelta(hours=1), "usage_value": usage(100, 100, 0, usd=0.5)})
    assert _query({dag_id})["totals"]["usd_spent"] == 0.5
    _delete_task_xcoms(task["dag_run_id"])
    _write({**task, "when": NOW, "usage_value": usage(10, 10, 0, usd=0.25)})
    summary = _query({dag_id})
    assert (summary["totals"]["calls"], summary["totals"]["usd_spent"]) == (1, 0.25)
    assert summary["totals"]["total_tokens"] == 20
    _delete_task_xcoms(task["dag_run_id"])  # cleared and not run again: nothing is left to count
    assert _query({dag_id})["totals"]["calls"] == 0


def _write_runs(dag_id: str, count: int) -> None:
    """``count`` runs of one task of ``dag_id``, each a call of 2 tokens that cost $0.50."""
    _write(
        *(
            {
                "dag_id": dag_id,
                "run_id": f"r{n}",
                "task_id": "a",
                "when": NOW,
                "usage_value": usage(1, 1, 0, usd=0.5),
            }
            for n in range(count)
        )
    )


def test_a_second_page_load_reads_no_json_of_the_calls_the_first_read():
    from airflow import settings
    from sqlalchemy import event

    dag_id = f"spend_remembered_{uuid.uuid4().hex[:8]}"
    _write_runs(dag_id, 3)
    first = _query({dag_id})
    statements = []

    def remember(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(settings.engine, "before_cursor_execute", remember)
    try:
        second = _query({dag_id})
    finally:
        event.remove(settings.engine, "before_cursor_execute", remember)
    assert second == first and second["totals"]["calls"] == 3
    reads_of_xcom = [statement for statement in statements if "xcom" in statement]
    assert reads_of_xcom, "the second load reads the window's rows"
    assert not [
        statement for statement in reads_of_xcom if "value" in statement or "json" in statement.lower()
    ]


def test_calls_beyond_the_memory_limit_still_count_at_every_load(monkeypatch):
    from airflow_o3.plugins.spend_query import RECORDED

    monkeypatch.setattr(RECORDED, "limit", 2)
    dag_id = f"spend_limit_{uuid.uuid4().hex[:8]}"
    _write_runs(dag_id, 5)
    loads = [_query({dag_id})["totals"] for _ in range(2)]
    assert [(totals["calls"], totals["usd_spent"]) for totals in loads] == [(5, 2.5), (5, 2.5)]


def test_a_dag_that_reported_no_cost_ranks_after_one_that_cost_nothing():
    unpriced, free = f"spend_unpriced_{uuid.uuid4().hex[:8]}", f"spend_free_{uuid.uuid4().hex[:8]}"
    _write(
        {"dag_id": unpriced, "run_id": "r", "task_id": "a", "when": NOW, "usage_value": usage(900, 900, 0)},
        {
            "dag_id": free,
            "run_id": "r",
            "task_id": "a",
            "when": NOW,
            "usage_value": usage(1, 1, 0, usd=0.5),
            "from_cache": True,
        },
    )
    summary = _query({unpriced, free})
    assert [(row["dag_id"], row["usd_spent"]) for row in summary["per_dag"]] == [
        (free, 0.0),
        (unpriced, None),
    ]
    assert [task["dag_id"] for task in summary["top_tasks"]] == [free, unpriced]


def test_the_csv_reads_a_call_as_the_summary_does():
    from airflow.utils.session import create_session

    from airflow_o3.plugins.spend_query import SpendQuery, Window, csv_lines

    dag_id = f"spend_alike_{uuid.uuid4().hex[:8]}"
    _write(
        {
            "dag_id": dag_id,
            "run_id": "r",
            "task_id": "a",
            "when": NOW,
            "usage_value": {**usage(3, 4, 1), "usd_spent": "0.5"},  # a cost that is no number
        }
    )
    with create_session() as session:
        text = "".join(csv_lines(SpendQuery(session, Window.last(7, now=NOW), {dag_id}).calls()))
    (row,) = csv.DictReader(io.StringIO(text))
    assert _query({dag_id})["totals"]["usd_spent"] is None
    assert (row["usd_spent"], row["total_tokens"]) == ("", "7")

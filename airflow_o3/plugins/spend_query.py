"""What the o3-mini tasks spent, read from the ``usage`` and ``completion`` XComs they recorded.

Airflow 3 keeps XCom values as JSON in the ``xcom`` table. A page load lists the ``usage`` rows of the
window and of the DAGs the user may read (where each call ran and when its rows were written, no
JSON), reads the JSON only of the calls the API server does not remember yet (:class:`RecordedCalls`)
and adds the figures up in the API server. The CSV download reads every call's JSON, streamed. See
``docs/spend.md``.
"""

from __future__ import annotations

import csv
import heapq
import io
import operator
import threading
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from sqlalchemy import String, and_, cast, func, select
from sqlalchemy.orm import aliased

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Sequence

    from sqlalchemy import Select
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.elements import ColumnElement

MAX_DAYS = 366
"""The longest window the page offers, in days."""
TOP = 10
"""How many of the most expensive tasks and runs the page lists."""
MODEL_NOT_RECORDED = "not recorded"
"""The model shown for a usage record without a ``completion`` XCom (a batch task records none)."""


@dataclass(frozen=True)
class Window:
    """The days shown: ``days`` whole UTC days ending today, from ``since`` (midnight UTC) on."""

    days: int
    since: datetime

    @classmethod
    def last(cls, days: int, now: datetime | None = None) -> Window:
        """The last ``days`` UTC days, today included."""
        if not 1 <= days <= MAX_DAYS:
            raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}, not {days}")
        today = (now or datetime.now(UTC)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(days, today - timedelta(days=days - 1))

    def day_names(self) -> list[str]:
        """Every day of the window as ``YYYY-MM-DD``, oldest first."""
        return [(self.since + timedelta(days=offset)).strftime("%Y-%m-%d") for offset in range(self.days)]


SPEND_FIELDS = (
    "calls",
    "replies",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "total_tokens",
    "usd_spent",
    "calls_without_cost",
)
"""What is added up per call, in this order: ``usd_spent`` adds the calls whose cost the service
reported; ``calls_without_cost`` counts the others (their tokens are in, their cost is "not reported")."""
_CALLS, _TOTAL_TOKENS, _USD, _WITHOUT_COST = (
    SPEND_FIELDS.index(name) for name in ("calls", "total_tokens", "usd_spent", "calls_without_cost")
)
TOKENS: tuple[str | tuple[str, ...], ...] = (
    "prompt_tokens",
    ("prompt_tokens_details", "cached_tokens"),
    "completion_tokens",
    ("completion_tokens_details", "reasoning_tokens"),
    "total_tokens",
)
"""Where each token figure (``prompt_tokens`` to ``total_tokens``) is in a ``usage``
value: a key, or keys into nested objects."""


def _spend(figures: Sequence[float]) -> dict[str, Any]:
    """Figures added up (in :data:`SPEND_FIELDS` order) as JSON; ``usd_spent`` is ``None`` when no call
    of these reported a cost."""
    priced = figures[_WITHOUT_COST] < figures[_CALLS]
    return {
        name: (round(value, 8) if priced else None) if name == "usd_spent" else int(value)
        for name, value in zip(SPEND_FIELDS, figures, strict=True)
    }


def _day(timestamp: Any, dialect: str) -> ColumnElement[str]:
    """The UTC day of ``timestamp`` as ``YYYY-MM-DD`` (Airflow stores timestamps in UTC)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", timestamp), "YYYY-MM-DD")
    if dialect == "mysql":
        return func.date_format(timestamp, "%Y-%m-%d")
    return func.strftime("%Y-%m-%d", timestamp)


def _written(usage: Any) -> ColumnElement[str]:
    """What changes when a call is recorded again: its ``usage`` row's timestamp, as text.

    Airflow sets an XCom's timestamp anew whenever a task writes it (a cleared and re-run task too),
    and a task writes its ``usage`` before its ``completion``.
    """
    written: ColumnElement[str] = cast(usage.timestamp, String).label("written")
    return written


def _usage_rows(columns: Callable[[Any], Sequence[Any]], with_values: bool) -> tuple[Any, Select[Any]]:
    """The ``usage`` alias of the ``xcom`` table and a statement of its ``usage`` rows: ``columns(usage)``
    and, ``with_values``, then the JSON values of the row and of the ``completion`` row of the same task
    and map index."""
    from airflow.models.xcom import XComModel

    usage = aliased(XComModel, name="usage")
    if not with_values:
        return usage, select(*columns(usage)).select_from(usage).where(usage.key == "usage")
    completion = aliased(XComModel, name="completion")
    same_task = and_(
        completion.dag_run_id == usage.dag_run_id,
        completion.task_id == usage.task_id,
        completion.map_index == usage.map_index,
        completion.key == "completion",
    )
    statement = (
        select(*columns(usage), usage.value, completion.value.label("completion_value"))
        .select_from(usage)
        .outerjoin(completion, same_task)
        .where(usage.key == "usage")
    )
    return usage, statement


def _number(value: Any, path: str | tuple[str, ...]) -> float | None:
    """A number in a JSON object (``path``: a key, or keys into nested objects), None where absent."""
    for key in (path,) if isinstance(path, str) else path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _figures(usage: Any, completion: Any) -> tuple[str, tuple[float, ...] | None]:
    """One call's model and figures (in :data:`SPEND_FIELDS` order) from its XCom values.

    The figures are None for a ``usage`` XCom that is not o3-mini spend: another task's, with neither
    a ``completion`` beside it nor a batch's ``items``.
    """
    model = completion.get("model") if isinstance(completion, dict) else None
    model = model if isinstance(model, str) else MODEL_NOT_RECORDED
    items = _number(usage, "items")
    if completion is None and items is None:
        return model, None
    replies = 1.0 if items is None else items
    # A reply from the response cache carries the usage of the call that paid for it: nothing this time.
    if isinstance(completion, dict) and completion.get("from_cache") is True:
        return model, (1.0, replies, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    tokens = [_number(usage, path) or 0.0 for path in TOKENS]
    usd = _number(usage, "usd_spent")
    return model, (1.0, replies, *tokens, usd or 0.0, float(usd is None))


class Recorded(NamedTuple):
    """One call as remembered: the timestamps it was read at, its model and figures."""

    written: str
    model: str
    figures: array[float] | None


CallKey = tuple[int, str, int]
"""A call: its ``usage`` row's run (``dag_run_id``), task and map index."""


class RecordedCalls:
    """The calls' figures, read from their JSON once and remembered by the API server process.

    A call is read again when its ``usage`` row was rewritten since (a cleared and re-run task) or it
    was not o3-mini spend when read (its ``completion`` not written yet). At most ``limit`` calls are
    remembered (about 0.6 KB each); past that, the calls the load did not list are forgotten, and
    calls beyond the limit are read again at each load (``docs/spend.md``, *Speed*).
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._remembered: dict[CallKey, Recorded] = {}

    def forget(self) -> None:
        """Forget every call (the next page load reads every call's JSON again)."""
        with self._lock:
            self._remembered.clear()

    def known(
        self, rows: list[Any], read: Callable[[Collection[int]], dict[CallKey, Recorded]]
    ) -> dict[CallKey, Recorded]:
        """The remembered calls of ``rows`` (from ``SpendQuery._recorded``), reading those not known.

        The answer is a copy, taken under the lock: another page load may forget calls meanwhile.
        """
        remembered = self._remembered
        with self._lock:
            stale = {
                run
                for run, task, index, written, *_ in rows
                if (entry := remembered.get((run, task, index))) is None
                or entry.written != written
                # Not (yet) o3-mini spend: a call whose completion was not written yet is read again.
                or entry.figures is None
            }
            if not stale:
                return dict(remembered)
        fresh = read(stale)
        with self._lock:
            if len(remembered) + len(fresh) > self.limit:
                listed = {(run, task, index) for run, task, index, *_ in rows}
                for key in [key for key in remembered if key not in listed]:
                    del remembered[key]
            for key, entry in fresh.items():
                if key in remembered or len(remembered) < self.limit:
                    remembered[key] = entry
            return {**remembered, **fresh}


RECORDED = RecordedCalls()
"""The API server's memory of the calls read (one per process; each page load reads through it)."""


def _add(sums: dict[Any, Sequence[float]], key: Any, figures: Sequence[float]) -> None:
    """Add ``figures`` (in :data:`SPEND_FIELDS` order) to the sums kept under ``key``.

    A sum is never changed in place (a new list each time): the first figures are kept as they are.
    """
    total = sums.get(key)
    sums[key] = figures if total is None else list(map(operator.add, total, figures))


def _most_expensive(
    sums: dict[Any, Sequence[float]], count: int | None = None
) -> list[tuple[Any, dict[str, Any]]]:
    """The groups the most expensive first, all or the first ``count``: dollars (groups with no cost
    reported last), then tokens, then the group's name."""

    def cost(item: tuple[Any, Sequence[float]]) -> tuple[float, float, Any]:
        key, figures = item
        usd = figures[_USD] if figures[_WITHOUT_COST] < figures[_CALLS] else -1.0
        return -usd, -figures[_TOTAL_TOKENS], key

    ranked = heapq.nsmallest(count or len(sums), sums.items(), key=cost)
    return [(key, _spend(figures)) for key, figures in ranked]


class SpendQuery:
    """The recorded spend of a window, restricted to the DAGs a user may read.

    :param session: a session on Airflow's metadata database.
    :param window: the days to add up.
    :param dag_ids: the DAGs whose calls count (the user's readable DAGs); nothing else is read.
    """

    def __init__(self, session: Session, window: Window, dag_ids: Collection[str]) -> None:
        self.session = session
        self.window = window
        self.dag_ids = sorted(dag_ids)
        self.dialect = session.get_bind().dialect

    def _recorded(self) -> list[Any]:
        """Every ``usage`` row of the window and the readable DAGs: where, when and its change token.

        No JSON is read, nor the ``completion`` rows: the token is the ``usage`` row's timestamp.
        """
        usage, statement = _usage_rows(
            lambda usage: (
                usage.dag_run_id,
                usage.task_id,
                usage.map_index,
                _written(usage),
                _day(usage.timestamp, self.dialect.name).label("day"),
                usage.dag_id,
                usage.run_id,
            ),
            with_values=False,
        )
        # Plain rows, without the ORM's result processing: 100,000 of them on a 90-day window.
        return list(self.session.connection().execute(statement.where(*self._in_window(usage))))

    def _in_window(self, usage: Any) -> tuple[ColumnElement[bool], ...]:
        """The conditions on ``usage`` rows of the window and of the readable DAGs."""
        return usage.timestamp >= self.window.since, usage.dag_id.in_(self.dag_ids)

    def _read(self, dag_run_ids: Collection[int]) -> dict[CallKey, Recorded]:
        """The figures of every call of these runs, read from their JSON (the calls not remembered yet)."""
        usage, statement = _usage_rows(
            lambda usage: (usage.dag_run_id, usage.task_id, usage.map_index, _written(usage)),
            with_values=True,
        )
        read: dict[CallKey, Recorded] = {}
        ordered = sorted(dag_run_ids)
        for start in range(0, len(ordered), 500):
            chunk = statement.where(usage.dag_run_id.in_(ordered[start : start + 500]))
            for run, task, index, written, usage_value, completion_value in self.session.execute(chunk):
                model, figures = _figures(usage_value, completion_value)
                read[(run, task, index)] = Recorded(
                    written, model, None if figures is None else array("d", figures)
                )
        return read

    def summary(self) -> dict[str, Any]:
        """Everything the page draws: totals, per day, per DAG, per model, the top tasks and runs."""
        cells: dict[tuple[str, str, str], Sequence[float]] = {}
        per_task: dict[tuple[str, str, str], Sequence[float]] = {}
        mapped: set[tuple[str, str, str]] = set()
        if self.dag_ids:
            rows = self._recorded()
            known = RECORDED.known(rows, self._read)
            for run, task, index, written, day, dag_id, run_id in rows:
                entry = known.get((run, task, index))
                if entry is None or entry.written != written or entry.figures is None:
                    continue
                # _add, written out: this loop runs once per call of the window.
                figures, cell, task_key = entry.figures, (day, dag_id, entry.model), (dag_id, run_id, task)
                in_cell, in_task = cells.get(cell), per_task.get(task_key)
                cells[cell] = figures if in_cell is None else list(map(operator.add, in_cell, figures))
                per_task[task_key] = figures if in_task is None else list(map(operator.add, in_task, figures))
                if index >= 0:
                    mapped.add(task_key)
        per_run: dict[tuple[str, str], Sequence[float]] = {}
        for (dag_id, run_id, _task), task_figures in per_task.items():
            _add(per_run, (dag_id, run_id), task_figures)
        return {
            **self._per_cell(cells),
            "top_tasks": [
                _task_entry(task_key, task_key in mapped, spend)
                for task_key, spend in _most_expensive(per_task, TOP)
            ],
            "top_runs": [
                {"dag_id": dag_id, "run_id": run_id, "path": run_path(dag_id, run_id), **spend}
                for (dag_id, run_id), spend in _most_expensive(per_run, TOP)
            ],
        }

    def _per_cell(self, cells: dict[tuple[str, str, str], Sequence[float]]) -> dict[str, Any]:
        """The window, the totals and the sums per day, DAG and model, from the sums per (day, DAG, model)."""
        per_day: dict[str, Sequence[float]] = {
            day: [0.0] * len(SPEND_FIELDS) for day in self.window.day_names()
        }
        per_dag: dict[str, Sequence[float]] = {}
        per_model: dict[str, Sequence[float]] = {}
        for (day, dag_id, model), figures in cells.items():
            _add(per_day, day, figures)
            _add(per_dag, dag_id, figures)
            _add(per_model, model, figures)
        totals = [sum(column) for column in zip(*cells.values(), strict=True)] or [0.0] * len(SPEND_FIELDS)
        return {
            "window": {"days": self.window.days, "since": self.window.since.isoformat()},
            "totals": _spend(totals),
            "per_day": [{"day": day, **_spend(figures)} for day, figures in sorted(per_day.items())],
            "per_dag": [{"dag_id": key, **spend} for key, spend in _most_expensive(per_dag)],
            "per_model": [{"model": key, **spend} for key, spend in _most_expensive(per_model)],
        }

    def calls(self) -> Iterator[dict[str, Any]]:
        """Every recorded call of the window, oldest first: the rows of the CSV download."""
        if not self.dag_ids:
            return
        usage, statement = _usage_rows(
            lambda usage: (usage.timestamp, usage.dag_id, usage.run_id, usage.task_id, usage.map_index),
            with_values=True,
        )
        statement = statement.where(*self._in_window(usage)).order_by(
            usage.timestamp, usage.task_id, usage.map_index
        )
        for *where, usage_value, completion_value in self.session.execute(
            statement.execution_options(yield_per=2000)
        ):
            model, figures = _figures(usage_value, completion_value)
            if figures is not None:
                timestamp, *place = where
                yield {
                    "timestamp": timestamp.isoformat(),
                    **dict(zip(_PLACE, place, strict=True)),
                    "model": model,
                    **_spend(figures),
                }


def run_path(dag_id: str, run_id: str) -> str:
    """The run's page in Airflow 3's UI, relative to the UI's base URL."""
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _task_entry(task: tuple[str, str, str], mapped: bool, spend: dict[str, Any]) -> dict[str, Any]:
    """A top task as JSON, with the path of its page in the run (a mapped task's: its instances)."""
    dag_id, run_id, task_id = task
    path = f"{run_path(dag_id, run_id)}/tasks/{quote(task_id, safe='')}"
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "mapped": mapped,
        "path": f"{path}/mapped" if mapped else path,
        **spend,
    }


_PLACE = ("dag_id", "run_id", "task_id", "map_index")
CSV_COLUMNS = ("timestamp", *_PLACE, "model", *SPEND_FIELDS[SPEND_FIELDS.index("replies") : _USD + 1])


def _cell(value: Any) -> Any:
    """A spreadsheet reads ``=...`` as a formula: text that starts like one is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def csv_lines(calls: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The calls as CSV text, a header line first, one line per call (``usd_spent`` empty: not reported)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for call in calls:
        writer.writerow([_cell(call[column]) for column in CSV_COLUMNS])
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()

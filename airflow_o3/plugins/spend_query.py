"""What the o3-mini tasks spent, read from the ``usage`` and ``completion`` XComs they recorded.

Airflow 3 keeps XCom values as JSON in the ``xcom`` table. Every query here starts from the rows with
``key = 'usage'`` (the ``idx_xcom_key`` index), keeps those of the window and of the DAGs the user may
read, joins the task's ``completion`` row on the table's primary key for the model, and lets the
database add the figures up (``GROUP BY``): only the aggregates travel back, however many calls were
recorded. See ``docs/spend.md``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import and_, func, literal, select
from sqlalchemy.orm import aliased

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

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


@dataclass(frozen=True)
class Spend:
    """Calls and their tokens and dollars, added up.

    ``usd_spent`` adds the calls whose cost the service reported; ``calls_without_cost`` counts the others
    (their tokens are in, their cost is "not reported").
    """

    calls: int = 0
    replies: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    usd_spent: float = 0.0
    calls_without_cost: int = 0

    def __add__(self, other: Spend) -> Spend:
        mine, theirs = asdict(self), asdict(other)
        return Spend(**{name: mine[name] + theirs[name] for name in mine})

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON; ``usd_spent`` is ``None`` when no call of these reported a cost."""
        figures = asdict(self)
        figures["usd_spent"] = round(self.usd_spent, 8) if self.calls_without_cost < self.calls else None
        return figures


def _figure(value: Any, path: str | tuple[str, ...]) -> ColumnElement[Any]:
    """A number in the JSON value (``path``: a key, or keys into nested objects), NULL where absent."""
    figure: ColumnElement[Any] = value[path].as_float()
    return figure


def _day(timestamp: Any, dialect: str) -> ColumnElement[str]:
    """The UTC day of ``timestamp`` as ``YYYY-MM-DD`` (Airflow stores timestamps in UTC)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", timestamp), "YYYY-MM-DD")
    if dialect == "mysql":
        return func.date_format(timestamp, "%Y-%m-%d")
    return func.strftime("%Y-%m-%d", timestamp)


def _spend_columns(usage_value: Any) -> list[ColumnElement[Any]]:
    """The aggregates of :class:`Spend`, in its field order, over the ``usage`` rows of a group."""
    usd = _figure(usage_value, "usd_spent")

    def total(path: str | tuple[str, ...]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(_figure(usage_value, path)), 0)

    return [
        func.count(),
        func.coalesce(func.sum(func.coalesce(_figure(usage_value, "items"), 1)), 0),
        total("prompt_tokens"),
        total(("prompt_tokens_details", "cached_tokens")),
        total("completion_tokens"),
        total(("completion_tokens_details", "reasoning_tokens")),
        total("total_tokens"),
        func.coalesce(func.sum(usd), 0),
        func.count() - func.count(usd),
    ]


def _spend(figures: Any) -> Spend:
    calls, replies, prompt, cached, completion, reasoning, total, usd, without_cost = figures
    return Spend(
        int(calls),
        int(replies),
        int(prompt),
        int(cached),
        int(completion),
        int(reasoning),
        int(total),
        float(usd),
        int(without_cost),
    )


class SpendQuery:
    """The recorded spend of a window, restricted to the DAGs a user may read.

    :param session: a session on Airflow's metadata database.
    :param window: the days to add up.
    :param dag_ids: the DAGs whose calls count (the user's readable DAGs); nothing else is read.
    """

    def __init__(self, session: Session, window: Window, dag_ids: Collection[str]) -> None:
        from airflow.models.xcom import XComModel

        self.session = session
        self.window = window
        self.dag_ids = sorted(dag_ids)
        self.usage = aliased(XComModel, name="usage")
        self.completion = aliased(XComModel, name="completion")
        bind = session.get_bind()
        self.day = _day(self.usage.timestamp, bind.dialect.name).label("day")
        self.model = func.coalesce(
            self.completion.value["model"].as_string(), literal(MODEL_NOT_RECORDED)
        ).label("model")

    def _select(self, *columns: Any) -> Any:
        usage, completion = self.usage, self.completion
        same_task = and_(
            completion.dag_run_id == usage.dag_run_id,
            completion.task_id == usage.task_id,
            completion.map_index == usage.map_index,
            completion.key == "completion",
        )
        return (
            select(*columns, *_spend_columns(usage.value))
            .select_from(usage)
            .outerjoin(completion, same_task)
            .where(
                usage.key == "usage",
                usage.timestamp >= self.window.since,
                usage.dag_id.in_(self.dag_ids),
            )
        )

    def _grouped(self, *columns: Any) -> list[tuple[tuple[Any, ...], Spend]]:
        if not self.dag_ids:
            return []
        statement = self._select(*columns).group_by(*columns)
        width = len(columns)
        return [(tuple(row[:width]), _spend(row[width:])) for row in self.session.execute(statement)]

    def _top(
        self, columns: tuple[Any, ...], extra: tuple[Any, ...] = ()
    ) -> list[tuple[tuple[Any, ...], Spend]]:
        """The ``TOP`` groups that cost the most (dollars, then tokens when no cost was reported).

        ``extra``: aggregates returned after the group's columns (``max(map_index)`` for the tasks).
        """
        if not self.dag_ids:
            return []
        usd = func.sum(_figure(self.usage.value, "usd_spent"))
        tokens = func.sum(_figure(self.usage.value, "total_tokens"))
        statement = (
            self._select(*columns, *extra)
            .group_by(*columns)
            .order_by(func.coalesce(usd, -1).desc(), func.coalesce(tokens, 0).desc())
            .limit(TOP)
        )
        width = len(columns) + len(extra)
        return [(tuple(row[:width]), _spend(row[width:])) for row in self.session.execute(statement)]

    def summary(self) -> dict[str, Any]:
        """Everything the page draws: totals, per day, per DAG, per model, the top tasks and runs."""
        usage = self.usage
        cells = self._grouped(self.day, usage.dag_id, self.model)
        per_day = {day: Spend() for day in self.window.day_names()}
        per_dag: dict[str, Spend] = {}
        per_model: dict[str, Spend] = {}
        for (day, dag_id, model), spend in cells:
            per_day[day] = per_day.get(day, Spend()) + spend
            per_dag[dag_id] = per_dag.get(dag_id, Spend()) + spend
            per_model[model] = per_model.get(model, Spend()) + spend
        totals = sum(per_dag.values(), Spend())
        return {
            "window": {"days": self.window.days, "since": self.window.since.isoformat()},
            "totals": totals.to_json(),
            "per_day": [{"day": day, **spend.to_json()} for day, spend in sorted(per_day.items())],
            "per_dag": _ranked("dag_id", per_dag),
            "per_model": _ranked("model", per_model),
            "top_tasks": [
                _task_entry(key, spend)
                for key, spend in self._top(
                    (usage.dag_id, usage.run_id, usage.task_id), (func.max(usage.map_index),)
                )
            ],
            "top_runs": [
                {"dag_id": dag_id, "run_id": run_id, "path": run_path(dag_id, run_id), **spend.to_json()}
                for (dag_id, run_id), spend in self._top((usage.dag_id, usage.run_id))
            ],
        }

    def calls(self) -> Iterator[dict[str, Any]]:
        """Every recorded call of the window, oldest first: the rows of the CSV download."""
        if not self.dag_ids:
            return
        usage = self.usage
        columns = (usage.timestamp, usage.dag_id, usage.run_id, usage.task_id, usage.map_index, self.model)
        statement = self._select(*columns).group_by(*columns).order_by(usage.timestamp, usage.task_id)
        for row in self.session.execute(statement.execution_options(yield_per=2000)):
            timestamp, dag_id, run_id, task_id, map_index, model = row[:6]
            yield {
                "timestamp": timestamp.isoformat(),
                "dag_id": dag_id,
                "run_id": run_id,
                "task_id": task_id,
                "map_index": map_index,
                "model": model,
                **_spend(row[6:]).to_json(),
            }


def _ranked(name: str, groups: dict[str, Spend]) -> list[dict[str, Any]]:
    """The groups as JSON, the most expensive first (dollars, then tokens)."""
    ordered = sorted(groups.items(), key=lambda item: (-item[1].usd_spent, -item[1].total_tokens, item[0]))
    return [{name: key, **spend.to_json()} for key, spend in ordered]


def run_path(dag_id: str, run_id: str) -> str:
    """The run's page in Airflow 3's UI, relative to the UI's base URL."""
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def task_path(dag_id: str, run_id: str, task_id: str, mapped: bool) -> str:
    """The task's page in the run (for a mapped task, the list of its mapped instances)."""
    path = f"{run_path(dag_id, run_id)}/tasks/{quote(task_id, safe='')}"
    return f"{path}/mapped" if mapped else path


def _task_entry(key: tuple[Any, ...], spend: Spend) -> dict[str, Any]:
    dag_id, run_id, task_id, highest_map_index = key
    mapped = highest_map_index is not None and int(highest_map_index) >= 0
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "mapped": mapped,
        "path": task_path(dag_id, run_id, task_id, mapped),
        **spend.to_json(),
    }


CSV_COLUMNS = (
    "timestamp",
    "dag_id",
    "run_id",
    "task_id",
    "map_index",
    "model",
    "replies",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "total_tokens",
    "usd_spent",
)


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

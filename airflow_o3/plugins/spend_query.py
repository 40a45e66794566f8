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

from sqlalchemy import Integer, String, and_, case, func, literal, or_, select, union_all
from sqlalchemy.orm import aliased

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator

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


FIGURES: dict[str, str | tuple[str, ...]] = {
    "prompt_tokens": "prompt_tokens",
    "cached_tokens": ("prompt_tokens_details", "cached_tokens"),
    "completion_tokens": "completion_tokens",
    "reasoning_tokens": ("completion_tokens_details", "reasoning_tokens"),
    "total_tokens": "total_tokens",
    "usd_spent": "usd_spent",
    "items": "items",
}
"""The numbers read from each ``usage`` value: column name -> key (or keys into nested objects)."""


def _aggregates(calls: Any) -> list[ColumnElement[Any]]:
    """The figures of :class:`Spend`, in its field order, added up over a group of ``calls`` rows."""
    column = calls.c

    def total(name: str) -> ColumnElement[Any]:
        return func.coalesce(func.sum(column[name]), 0)

    return [
        func.count(),
        func.coalesce(func.sum(func.coalesce(column["items"], 1)), 0),
        *(total(name) for name in ("prompt_tokens", "cached_tokens", "completion_tokens")),
        *(total(name) for name in ("reasoning_tokens", "total_tokens", "usd_spent")),
        func.count() - func.count(column["usd_spent"]),
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


def _one_call(figures: dict[str, Any]) -> Spend:
    """The :class:`Spend` of one recorded call (figures as read, ``None`` where absent)."""
    tokens = {name: int(figures[name] or 0) for name in FIGURES if name.endswith("_tokens")}
    usd = figures["usd_spent"]
    return Spend(
        calls=1,
        replies=int(figures["items"] or 1),
        usd_spent=float(usd or 0),
        calls_without_cost=int(usd is None),
        **tokens,
    )


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

    def _calls(self) -> Any:
        """One row per recorded call of the window: where it ran, its model and its figures."""
        from airflow.models.xcom import XComModel

        usage = aliased(XComModel, name="usage")
        completion = aliased(XComModel, name="completion")
        same_task = and_(
            completion.dag_run_id == usage.dag_run_id,
            completion.task_id == usage.task_id,
            completion.map_index == usage.map_index,
            completion.key == "completion",
        )
        model = func.coalesce(completion.value["model"].as_string(), literal(MODEL_NOT_RECORDED))
        # A reply from the response cache carries the usage of the call that paid for it: nothing this time.
        from_cache = func.coalesce(completion.value["from_cache"].as_boolean(), False)

        def figure(name: str, path: str | tuple[str, ...]) -> ColumnElement[Any]:
            if name == "items":
                return _figure(usage.value, path).label(name)
            return case((from_cache, literal(0.0)), else_=_figure(usage.value, path)).label(name)

        return (
            select(
                usage.timestamp,
                _day(usage.timestamp, self.dialect.name).label("day"),
                usage.dag_id,
                usage.run_id,
                usage.task_id,
                usage.map_index,
                model.label("model"),
                *(figure(name, path) for name, path in FIGURES.items()),
            )
            .select_from(usage)
            .outerjoin(completion, same_task)
            .where(
                usage.key == "usage",
                usage.timestamp >= self.window.since,
                usage.dag_id.in_(self.dag_ids),
                # Ours: a call's usage beside its completion, or a batch's (with items). Another
                # task's XCom that happens to be called "usage" is not o3-mini spend.
                or_(completion.dag_run_id.is_not(None), _figure(usage.value, "items").is_not(None)),
            )
        )

    def _calls_once(self) -> Any:
        """The calls as a common table expression that the database reads (and parses the JSON of) once."""
        calls = self._calls().cte("o3_calls")
        version = tuple(getattr(self.dialect.dbapi, "sqlite_version_info", ()))
        if self.dialect.name == "postgresql" or (self.dialect.name == "sqlite" and version >= (3, 35)):
            calls = calls.prefix_with("MATERIALIZED")
        return calls

    def _groups(self) -> Any:
        """Per day, DAG and model; the top tasks; the top runs: one statement, tagged by ``kind``."""
        calls = self._calls_once()
        column = calls.c
        by_cost = (func.coalesce(func.sum(column.usd_spent), -1).desc(), func.sum(column.total_tokens).desc())
        no_text, no_number = literal(None, String), literal(None, Integer)

        def top(kind: str, keys: tuple[Any, ...], *slots: Any) -> Any:
            ranked = select(literal(kind), *slots, *_aggregates(calls)).group_by(*keys).order_by(*by_cost)
            return select(ranked.limit(TOP).subquery())

        cells = select(
            literal("cell"), column.day, column.dag_id, column.model, no_number, *_aggregates(calls)
        )
        return union_all(
            cells.group_by(column.day, column.dag_id, column.model),
            top(
                "task",
                (column.dag_id, column.run_id, column.task_id),
                column.dag_id,
                column.run_id,
                column.task_id,
                func.max(column.map_index),
            ),
            top("run", (column.dag_id, column.run_id), column.dag_id, column.run_id, no_text, no_number),
        )

    def summary(self) -> dict[str, Any]:
        """Everything the page draws: totals, per day, per DAG, per model, the top tasks and runs."""
        per_day = {day: Spend() for day in self.window.day_names()}
        per_dag: dict[str, Spend] = {}
        per_model: dict[str, Spend] = {}
        tasks: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        rows: Iterable[Any] = self.session.execute(self._groups()) if self.dag_ids else ()
        for kind, first, second, third, fourth, *figures in rows:
            spend = _spend(figures)
            if kind == "cell":
                per_day[first] = per_day.get(first, Spend()) + spend
                per_dag[second] = per_dag.get(second, Spend()) + spend
                per_model[third] = per_model.get(third, Spend()) + spend
            elif kind == "task":
                tasks.append(_task_entry(first, second, third, fourth, spend))
            else:
                runs.append(
                    {"dag_id": first, "run_id": second, "path": run_path(first, second), **spend.to_json()}
                )
        return {
            "window": {"days": self.window.days, "since": self.window.since.isoformat()},
            "totals": sum(per_dag.values(), Spend()).to_json(),
            "per_day": [{"day": day, **spend.to_json()} for day, spend in sorted(per_day.items())],
            "per_dag": _ranked("dag_id", per_dag),
            "per_model": _ranked("model", per_model),
            "top_tasks": _by_cost(tasks),
            "top_runs": _by_cost(runs),
        }

    def calls(self) -> Iterator[dict[str, Any]]:
        """Every recorded call of the window, oldest first: the rows of the CSV download."""
        if not self.dag_ids:
            return
        statement = self._calls().order_by("timestamp", "task_id", "map_index")
        for row in self.session.execute(statement.execution_options(yield_per=2000)).mappings():
            yield {
                "timestamp": row["timestamp"].isoformat(),
                **{name: row[name] for name in ("dag_id", "run_id", "task_id", "map_index", "model")},
                **_one_call(dict(row)).to_json(),
            }


def _by_cost(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries the most expensive first (a UNION keeps no order): dollars, then tokens."""
    return sorted(entries, key=lambda entry: (-(entry["usd_spent"] or 0), -entry["total_tokens"]))


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


def _task_entry(
    dag_id: str, run_id: str, task_id: str, highest_map_index: Any, spend: Spend
) -> dict[str, Any]:
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

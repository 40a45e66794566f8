"""The daily spend ledger of a connection, and its cap (connection extra ``daily_budget_usd``).

Every paid reply is recorded (its ``usd_spent``, else the list-price estimate, and its credits); a
reply read from the response cache costs nothing and is not. Before a request starts, the UTC day's
spend on the connection is compared with the cap. Each worker process keeps one small JSON file of
its own running total per connection and day, ``{ledger_path}/{fingerprint}/{YYYY-MM-DD}/``, and
only ever rewrites its own file (atomically), so writers on many machines never lose each other's
updates and need no lock; a check sums the day's files. The fingerprint is the response cache's
HMAC of the base URL under the key: the key cannot be read from a path.

It fails safe: a day's file that cannot be read and a folder that cannot be listed refuse the request
(:class:`LedgerUnavailableError`, naming the file and the fix), as does a process whose own spend
could not be written and still cannot. A paid reply whose recording fails is never an error (a task
retry would pay again): it is a warning. Layout, exactness and failures: ``docs/spend.md``.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_o3.errors import ConfigurationError, DailyBudgetExceededError, LedgerUnavailableError
from airflow_o3.storage import local_folder, object_path, read_text, under_airflow_home, why, write_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_o3.response import Completion

log = logging.getLogger(__name__)

LEDGER_VERSION = 1
DEFAULT_REFRESH_SECONDS = 5.0
RATE_LOOKBACK_DAYS = 7
"""How many earlier days' files are read for the credits-per-dollar rate when today has none."""

_FILE_NAME = re.compile(r"[A-Za-z0-9._-]+\.json")


def utc_day(now: float) -> str:
    """The UTC day of a ``time.time()`` value, as ``YYYY-MM-DD``: the ledger's day."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


@dataclass(frozen=True)
class CapSettings:
    """The connection extras of the daily cap.

    :param daily_budget_usd: dollars the connection may spend per UTC day, across every task, DAG
        and worker; ``None`` for no cap (the spend is still recorded).
    :param ledger_path: where the day's spend is kept: a local folder (one machine) or an
        object-storage URL every worker reaches, e.g. ``s3://bucket/o3-ledger``.
    :param ledger_refresh_seconds: how stale the other workers' spend may be at a check.
    """

    daily_budget_usd: float | None = None
    ledger_path: str | None = None
    ledger_refresh_seconds: float = DEFAULT_REFRESH_SECONDS

    @property
    def root(self) -> str:
        """Where the ledger lives: ``ledger_path``, else ``$AIRFLOW_HOME/o3_ledger`` (one machine's)."""
        return self.ledger_path or under_airflow_home("o3_ledger")


def cap_settings_from_extras(conn_id: str, extras: Mapping[str, Any]) -> CapSettings:
    """:class:`CapSettings` from a connection's extras.

    :raises ConfigurationError: a cap that is not a number of dollars above 0, a refresh that is
        not seconds of 0 or more, or a ledger path with credentials in it.
    """
    cap = extra_number(conn_id, extras, "daily_budget_usd", "a number of dollars above 0, e.g. 25", 0.0)
    refresh = extra_number(conn_id, extras, "ledger_refresh_seconds", "seconds, 0 or more, e.g. 5", -1.0)
    path = str(extras.get("ledger_path") or "").strip() or None
    if path is not None and "://" in path and "@" in urlsplit(path).netloc:
        raise ConfigurationError(
            f"connection {conn_id!r}: the extra ledger_path has credentials before an '@' (fix: give "
            "the storage's credentials through an Airflow connection of its own, not in the path)"
        )
    return CapSettings(
        daily_budget_usd=cap,
        ledger_path=path,
        ledger_refresh_seconds=DEFAULT_REFRESH_SECONDS if refresh is None else refresh,
    )


def extra_number(
    conn_id: str, extras: Mapping[str, Any], name: str, wanted: str, above: float
) -> float | None:
    """The connection extra ``name`` as a finite number above ``above``; ``None`` when it is not set.

    :param wanted: what to set instead, for the error (``"seconds, 0 or more, e.g. 5"``).
    :raises ConfigurationError: a value that is not such a number (a boolean neither), naming it.
    """
    value = extras.get(name)
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= above:
        raise ConfigurationError(
            f"the connection extra {name}={value!r} is not usable (fix: set it to {wanted} on connection "
            f"{conn_id!r})"
        )
    return number


@dataclass
class _Tally:
    """One process's spend on one connection and day: what its file holds, or should.

    ``writing`` lets one thread at a time write the file, always with the latest totals, so a
    batch's threads never put an older total over a newer one.
    """

    day: str
    file: str
    usd: float = 0.0
    credits: float = 0.0
    priced_usd: float = 0.0
    requests: int = 0
    written: int = 0
    written_at: float = 0.0
    writing: threading.Lock = field(default_factory=threading.Lock)

    def text(self, conn_id: str) -> str:
        figures = {name: getattr(self, name) for name in ("day", "usd", "credits", "priced_usd", "requests")}
        updated = datetime.now(UTC).isoformat(timespec="seconds")
        return json.dumps({"version": LEDGER_VERSION, "connection": conn_id, **figures, "updated": updated})


@dataclass
class _Seen:
    """The other processes' files of a day, as last read."""

    read_at: float
    usd: float
    credits: float
    priced_usd: float


UNCAPPED_WRITE_INTERVAL = 5.0
"""Seconds between two writes of a process's total on a connection without a cap (its first paid
reply is written at once, the last at exit). The ledger then only keeps the credits-per-dollar rate
and the day's history, and a write per reply would cost every call about 0.4 ms."""

_lock = threading.Lock()
_tallies: dict[tuple[str, str, str, int], _Tally] = {}
_unwritten: dict[int, tuple[DailyLedger, _Tally]] = {}
_seen: dict[tuple[str, str, str], _Seen] = {}


def _new_lock_after_fork() -> None:
    """A forked child gets a free lock: another thread of the parent may have held it at the fork.
    The child's totals are its own (keyed by process id), so nothing else needs resetting."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


@atexit.register
def _write_the_rest() -> None:
    """At exit, write the totals that waited (connections without a cap); a failure is a warning."""
    for ledger, tally in list(_unwritten.values()):
        try:
            ledger._write(tally)
        except Exception as error:
            log.warning(
                "The daily spend ledger of connection %r was not written at exit (%s)",
                ledger.conn_id,
                why(error),
            )


def _writer_name() -> str:
    """This process's file name: host, process id and a random part (a process id is reused)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}.json"


class DailyLedger:
    """The spend of one connection per UTC day, shared by every process that can reach the ledger.

    :param conn_id: the connection, named in messages and in its files (for people reading them).
    :param fingerprint: the connection's fingerprint (base URL and key, the key not recoverable).
    :param settings: the cap and where the ledger lives.
    :param clock: seconds since the epoch (``time.time``); tests move the day with it.
    """

    def __init__(
        self,
        conn_id: str,
        fingerprint: str,
        settings: CapSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.conn_id = conn_id
        self.fingerprint = fingerprint[:32]
        self.settings = settings
        self.clock = clock
        self._root = settings.root

    def check(self) -> None:
        """Refuse a new request once the day's spend has reached the cap; nothing when there is none.

        :raises DailyBudgetExceededError: naming the connection, the cap and the day's spend.
        :raises LedgerUnavailableError: the day's spend cannot be read, or this process's cannot be
            written: the cap cannot be kept.
        """
        cap = self.settings.daily_budget_usd
        if cap is None:
            return
        day = utc_day(self.clock())
        spent = self.spent(day)
        if spent >= cap:
            raise DailyBudgetExceededError(
                f"the daily budget of connection {self.conn_id!r} is reached: ${spent:.6f} spent on "
                f"{day} (UTC) of daily_budget_usd ${cap:.6f}, so no new request starts until 00:00 UTC "
                f"(fix: wait for the next day, or raise the connection extra daily_budget_usd)"
            )

    def record(self, completion: Completion) -> None:
        """Count a paid reply in this process's total for the day and write the total; a reply read
        from the response cache is not counted. Never raises: a failed write is a warning."""
        from airflow_o3.budget import cost_usd

        if completion.from_cache:
            return
        usd = cost_usd(completion)
        credits = completion.credits_used
        tally = self._tally(utc_day(self.clock()))
        with _lock:
            tally.usd += usd
            tally.requests += 1
            if credits is not None and credits > 0 and completion.cost_usd:
                tally.credits += float(credits)
                tally.priced_usd += float(completion.cost_usd)
            if (  # no cap, and written less than UNCAPPED_WRITE_INTERVAL seconds ago: written later
                self.settings.daily_budget_usd is None
                and tally.written > 0
                and self.clock() - tally.written_at < UNCAPPED_WRITE_INTERVAL
            ):
                _unwritten[id(tally)] = (self, tally)
                return
        try:
            self._write(tally)
        except Exception as error:
            log.warning(
                "The reply was paid for but the daily spend ledger of connection %r could not be "
                "written (%s): other workers do not see this spend until a write succeeds%s "
                "(fix: make %s writable)",
                self.conn_id,
                why(error),
                ", and this process refuses new requests while it cannot write"
                if self.settings.daily_budget_usd is not None
                else "",
                self.settings.root,
            )

    def spent(self, day: str) -> float:
        """Dollars spent on the connection on ``day``: this process's now, the others' as last read."""
        tally = self._tally(day)
        if tally.written != tally.requests:
            try:
                self._write(tally)
            except Exception as error:
                raise self._unavailable(f"this process's spend could not be written ({why(error)})") from None
        return tally.usd + self._others(day, tally.file).usd

    def credits_per_usd(self) -> float | None:
        """The rate paid replies showed (their credits over their dollars), today's or, when today
        has none, the latest of the last :data:`RATE_LOOKBACK_DAYS` days; ``None`` when none did."""
        now = self.clock()
        for back in range(RATE_LOOKBACK_DAYS + 1):
            day = utc_day(now - back * 86400)
            tally = self._tally(day)
            try:
                others = self._others(day, tally.file)
            except LedgerUnavailableError:
                others = _Seen(0.0, 0.0, 0.0, 0.0)
            credits, usd = tally.credits + others.credits, tally.priced_usd + others.priced_usd
            if credits > 0 and usd > 0:
                return credits / usd
        return None

    def _tally(self, day: str) -> _Tally:
        key = (self._root, self.fingerprint, day, os.getpid())
        with _lock:
            tally = _tallies.get(key)
            if tally is None:
                tally = _tallies[key] = _Tally(day, _writer_name())
            return tally

    def _write(self, tally: _Tally) -> None:
        """Write this process's file with its latest totals (skipped when they are on file already)."""
        with tally.writing:
            with _lock:
                requests, text = tally.requests, tally.text(self.conn_id)
            if requests == tally.written:
                return
            write_text(_join(self._folder(tally.day), tally.file), text)
            tally.written, tally.written_at = requests, self.clock()

    def _others(self, day: str, own: str) -> _Seen:
        key = (self._root, self.fingerprint, day)
        now = time.monotonic()
        with _lock:
            seen = _seen.get(key)
        if seen is None or now - seen.read_at >= self.settings.ledger_refresh_seconds:
            seen = self._read_day(day, own, now)
            with _lock:
                _seen[key] = seen
        return seen

    def _read_day(self, day: str, own: str, now: float) -> _Seen:
        folder = self._folder(day)
        try:
            names = _list(folder)
        except FileNotFoundError:
            return _Seen(now, 0.0, 0.0, 0.0)
        except Exception as error:
            raise self._unavailable(f"the folder {folder} could not be listed ({why(error)})") from None
        usd = credits = priced = 0.0
        for name in names:
            if name == own or not _FILE_NAME.fullmatch(name):
                continue
            entry = _read_entry(_join(folder, name))
            if isinstance(entry, str):
                raise self._unavailable(
                    f"the file {_join(folder, name)} {entry} (fix: repair or delete it; "
                    "a deleted file's spend is no longer counted)"
                )
            usd, credits, priced = usd + entry[0], credits + entry[1], priced + entry[2]
        return _Seen(now, usd, credits, priced)

    def _folder(self, day: str) -> str:
        return _join(self._root, self.fingerprint, day)

    def _unavailable(self, why: str) -> LedgerUnavailableError:
        return LedgerUnavailableError(
            f"the daily spend ledger of connection {self.conn_id!r} cannot be kept, so no request "
            f"starts: {why}. Nothing was sent. Fix: make the connection extra ledger_path "
            f"({self.settings.root}) readable and writable by every worker"
        )


def _read_entry(location: str) -> tuple[float, float, float] | str:
    """A file's dollars, credits and priced dollars, or why it cannot be counted (in words)."""
    try:
        data = json.loads(read_text(location))
    except FileNotFoundError:
        return 0.0, 0.0, 0.0  # removed since the listing
    except Exception as error:
        return f"could not be read ({why(error)})"
    if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
        return "is not a ledger file of version 1"
    figures = [data.get(name) for name in ("usd", "credits", "priced_usd")]
    numbers = [float(f) for f in figures if isinstance(f, int | float) and not isinstance(f, bool)]
    if len(numbers) != len(figures) or not all(math.isfinite(n) and n >= 0 for n in numbers):
        return "holds no usable dollar figures"
    return numbers[0], numbers[1], numbers[2]


def _join(folder: str, *names: str) -> str:
    """A path under a local folder or an object-storage URL (both separate names with ``/``)."""
    return "/".join((folder.rstrip("/"), *names))


def _list(folder: str) -> list[str]:
    """The names in a local folder (plain file calls) or under an object-storage URL."""
    local = local_folder(folder)
    if local is not None:
        return os.listdir(local)
    path = object_path(folder)
    if not path.exists():
        raise FileNotFoundError(folder)
    return [child.name for child in path.iterdir()]

"""Run a DAG end to end in the test process and read back what it did.

Usage::

    import pytest
    from tests.dagrun import run_dag

    pytestmark = pytest.mark.usefixtures("airflow_db")


    def test_summarise(capsys):
        result = run_dag("o3_summarise", run_conf={"topic": "tides"})
        result.assert_success()
        assert result.xcom("ask")["finish_reason"] == "stop"
        assert "tides" in result.rendered_fields("ask")["prompt"]
        assert SECRET not in result.log
        assert SECRET not in capsys.readouterr().out
        assert not result.leaks(SECRET)  # log, every XCom and every rendered field

How it runs
-----------
:func:`run_dag` calls ``dag.test()`` (Airflow 3.3): no scheduler, no executor, no subprocess. Each task
instance runs *in this process and thread* through ``InProcessTestSupervisor`` and the Execution API
served in-process, so ``monkeypatch``, ``mock.patch``, env-var connections (``AIRFLOW_CONN_*``) and
local stand-in servers all apply inside the tasks. Deferred tasks run their trigger inline
(``asyncio.run`` of ``trigger.run()``, first event only) and resume. A task that raises does not make
``run_dag`` raise: the run ends ``failed`` and the traceback is in the log; only errors of ``dag.test``
itself (DAG fails to serialize, DB missing...) propagate. Retries happen inside the run; ``dag.test``
polls once a second until ``retry_delay`` has passed, so give retrying tasks
``retry_delay=timedelta(0)`` in tests.

Which DAGs
----------
* ``run_dag("dag_id")`` parses ``AIRFLOW__CORE__DAGS_FOLDER`` (the repo's ``dags/`` in tests), then the
  ``test-dags`` bundle folder that the ``dag_file`` fixture writes to, with a fresh ``DagBag`` each
  time, and fails with :class:`DagLoadError` (listing the import errors) when the DAG is not there.
* ``run_dag(dag)`` runs a DAG object. ``dag.test()`` on its own only runs DAGs whose file is inside a
  configured bundle (it fails with "the dag is not serialized" otherwise), so a DAG built inside a test
  module is first written to the metadata DB (``sync_bag_to_db`` into the ``dags-folder`` bundle) and
  then tested. Give such DAGs a dag_id that no file in ``dags/`` uses.

Where the logs go, and how a test reads them
---------------------------------------------
Everything a run logs ends up on ``sys.stdout``: Airflow's structlog loggers (``[task]``, operator and
hook ``self.log``, the Execution API lines), ``print()`` from task code, and stdlib ``logging`` (the
``[DAG TEST] ...`` lines, ``logging.getLogger(__name__)`` in provider code). Airflow points its stdlib
root handler at the ``sys.stdout`` object of the moment it configures logging (at ``import airflow``,
i.e. pytest's session-wide capture file), which ``capsys``/``capfd`` never see; the ``airflow_db``
fixture (and a conftest hook before every test, once airflow is imported) re-points those handlers
at whatever ``sys.stdout`` is current at each write. Result:

* ``result.log``: the text written to ``sys.stdout``/``sys.stderr`` while ``dag.test()`` ran (the
  streams are teed, so capture still sees it too); ``result.task_log(task_id, map_index)`` cuts out one
  task's part (between ``[DAG TEST] starting ...`` and ``[DAG TEST] end task ...``).
* ``capsys.readouterr().out`` / ``capfd.readouterr().out``: the same text (plus anything else the test
  printed). ``capfd`` also sees writes straight to file descriptor 1/2 (C code, subprocesses), which
  ``result.log`` does not.
* ``caplog`` sees only the stdlib part, not structlog's: prefer ``result.log`` or ``capsys``.

Secret masking differs from production. In a deployment the task runs in a subprocess and its
supervisor passes every log line (and the task's stdout) through Airflow's secrets masker before it is
written. ``dag.test()`` has no supervisor: nothing that reaches ``result.log`` / ``capsys`` is masked,
not even a connection password or a value given to ``mask_secret()``. So ``secret not in result.log``
is the strict check "the code never writes the secret", independent of the masker. Rendered template
fields *are* masked (the Execution API redacts them when it stores them): a templated connection
password shows as ``"***"`` in :meth:`DagRunResult.rendered_fields`.

What a run leaves behind
------------------------
The returned :class:`DagRunResult` is a snapshot read right after the run (dag run state, every task
instance, every XCom deserialized through the configured XCom backend, every rendered-template-fields
row), so it stays valid even if a later run with the same logical date replaces the run in the DB.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.sdk import DAG

__all__ = ["DagLoadError", "DagRunResult", "load_dag", "register_dag", "run_dag"]

_MISSING: Any = object()
_state = {"prepared": False}


def airflow_major() -> int:
    """The installed Airflow's major version (2 or 3), read without importing airflow."""
    from importlib.metadata import version

    return int(version("apache-airflow").split(".")[0])


AIRFLOW_3 = airflow_major() >= 3


class DagLoadError(LookupError):
    """The DAG could not be found in (or imported from) the dags folder."""


# --------------------------------------------------------------------------------------------------
# Session set-up (called by the ``airflow_db`` fixture in conftest.py, and lazily by run_dag)
# --------------------------------------------------------------------------------------------------


class _CurrentStream(io.TextIOBase):
    """A text stream that writes to whatever ``sys.<name>`` is at the time of each write."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    def _target(self) -> Any:
        target = getattr(sys, self._name)
        return getattr(sys, f"__{self._name}__") if target is self else target

    def write(self, s: str) -> int:
        self._target().write(s)
        return len(s)

    def flush(self) -> None:
        self._target().flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", "utf-8")


_PYTEST_CAPTURE_TYPES = ("CaptureIO", "TeeCaptureIO", "EncodedFile")


def _follow_current_std_streams() -> None:
    """Re-point logging handlers bound to a stdout/stderr object at whatever ``sys.stdout/err`` is current.

    Airflow's logging config gives its root ``StreamHandler`` the ``sys.stdout`` object that exists when
    ``import airflow`` runs. Under pytest that is a capture file (the session's, or a ``capsys`` buffer
    of the test that imported airflow first), so later stdlib log records would bypass the ``capsys`` /
    ``capfd`` of the test that emits them. Idempotent; tests/conftest.py runs it before every test once
    airflow has been imported.
    """
    handlers: list[logging.Handler] = list(logging.root.handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    for handler in handlers:
        if type(handler) is not logging.StreamHandler:
            continue  # FileHandler, pytest's LogCaptureHandler, ...
        stream = handler.stream
        if isinstance(stream, _CurrentStream):
            continue
        if stream is sys.stderr or stream is sys.__stderr__:
            name = "stderr"
        elif (
            stream is sys.stdout
            or stream is sys.__stdout__
            or type(stream).__name__ in _PYTEST_CAPTURE_TYPES
            or isinstance(stream, _Tee)  # Airflow 2's dag.test() binds a handler to the run's stdout
        ):
            name = "stdout"
        else:
            continue
        with handler.lock or contextlib.nullcontext():
            handler.stream = _CurrentStream(name)  # not setStream(): it flushes the old, maybe closed, one


def _warm_up_execution_api() -> None:
    """Start the in-process Execution API app now (its first request takes ~3 s), not in a test."""
    try:
        from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor

        InProcessTestSupervisor._api_client().get("health")  # type: ignore[no-untyped-call]
    except Exception:  # private API: a failure here only costs the first run those seconds
        pass


class _AlreadyOnRoot(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes nothing: ``airflow.task`` records already reach stdout through the root handler."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


def _no_second_task_log_handler() -> None:
    """Airflow 2's ``dag.test()`` adds a stdout handler to the ``airflow.task`` logger unless it has a
    ``StreamHandler``; that logger also propagates to the root console handler, so every task line
    would be written twice. A silent ``StreamHandler`` keeps it to once, as in a real task log."""
    task_logger = logging.getLogger("airflow.task")
    if not any(isinstance(h, _AlreadyOnRoot) for h in task_logger.handlers):
        task_logger.addHandler(_AlreadyOnRoot())


def _prepare_airflow_for_tests() -> None:
    """Initialise Airflow for the test session once: metadata DB, log streams, Execution API."""
    if _state["prepared"]:
        return
    import airflow.configuration
    import airflow.settings

    expected_home = os.environ.get("AIRFLOW_HOME")
    if Path(airflow.configuration.AIRFLOW_HOME).resolve() != Path(str(expected_home)).resolve():
        raise RuntimeError(
            f"Airflow was configured with AIRFLOW_HOME={airflow.configuration.AIRFLOW_HOME!r}, not the "
            f"test home {expected_home!r}: something imported airflow before tests/conftest.py set the "
            "test environment (a pytest plugin or a conftest above tests/?)."
        )

    from airflow.utils import db

    db.initdb()
    if not AIRFLOW_3:
        # Airflow 2's initdb runs alembic's fileConfig(), which replaces the root handler with a
        # stderr one at WARNING; put Airflow's own logging config back.
        from airflow.logging_config import configure_logging

        configure_logging()
        _no_second_task_log_handler()
    _follow_current_std_streams()
    _warm_up_execution_api()
    _state["prepared"] = True


# --------------------------------------------------------------------------------------------------
# Loading and registering DAGs
# --------------------------------------------------------------------------------------------------


def _dags_folder() -> Path:
    from airflow.configuration import conf

    return Path(conf.get("core", "dags_folder")).resolve()


def _bundle_folders() -> dict[str, Path]:
    """Bundle name -> folder for the folders :func:`load_dag` searches, in search order."""
    folders = {"dags-folder": _dags_folder()}
    if test_dags := os.environ.get("AIRFLOW_O3_TEST_DAGS_FOLDER"):  # set by tests/conftest.py
        folders["test-dags"] = Path(test_dags).resolve()
    return folders


def load_dag(dag_id: str) -> DAG:
    """Parse the dags folder (then the tests' ``test-dags`` folder) and return the DAG ``dag_id``.

    Every call parses afresh (a new ``DagBag``), so edits to DAG files are picked up.

    :raises DagLoadError: the DAG is in neither; the message lists DAGs found and import errors.
    """
    found: list[str] = []
    errors: list[str] = []
    for bundle_name, folder in _bundle_folders().items():
        if not folder.is_dir():
            continue
        if AIRFLOW_3:
            from airflow.dag_processing.dagbag import DagBag

            bag = DagBag(dag_folder=folder, bundle_path=folder, bundle_name=bundle_name)
        else:  # Airflow 2: no bundles, one DagBag per folder
            from airflow.models.dagbag import DagBag as DagBag2

            bag = DagBag2(dag_folder=str(folder), include_examples=False)
        if (dag := bag.dags.get(dag_id)) is not None:
            return dag
        found.extend(sorted(bag.dags))
        errors.extend(f"--- {folder / path}:\n{err}" for path, err in sorted(bag.import_errors.items()))
    raise DagLoadError(
        f"DAG {dag_id!r} not found in {', '.join(str(f) for f in _bundle_folders().values())}. "
        f"DAGs found: {found or 'none'}. "
        + ("Import errors:\n" + "\n".join(errors) if errors else "No import errors.")
    )


def _is_in_dags_folder(dag: DAG) -> bool:
    fileloc = getattr(dag, "fileloc", None)
    if not fileloc:
        return False
    try:
        path = Path(fileloc).resolve()
    except OSError:
        return False
    return any(path.is_relative_to(folder) for folder in _bundle_folders().values())


def register_dag(dag: DAG) -> None:
    """Write a DAG object that does not live in the dags folder to the metadata DB.

    ``dag.test()`` only creates runs for serialized DAGs, and it serializes only what it finds in the
    configured bundles. :func:`run_dag` calls this for you. Airflow 2's ``dag.test()`` runs a DAG
    object as it is, so there this does nothing.
    """
    if not AIRFLOW_3:
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)  # type: ignore[no-untyped-call]
    bag = DagBag(dag_folder=_dags_folder(), collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


class _Tee(io.TextIOBase):
    """Write to the original stream and to a buffer."""

    def __init__(self, original: Any, buffer: io.StringIO) -> None:
        super().__init__()
        self._original = original
        self._buffer = buffer

    def write(self, s: str) -> int:
        self._buffer.write(s)
        with contextlib.suppress(ValueError):  # original closed (a finished test's capture): keep the copy
            self._original.write(s)
        return len(s)

    def flush(self) -> None:
        with contextlib.suppress(ValueError):
            self._original.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return int(self._original.fileno())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")


def run_dag(
    dag_or_dag_id: DAG | str,
    *,
    run_conf: dict[str, Any] | None = None,
    logical_date: datetime | None = _MISSING,
    **test_kwargs: Any,
) -> DagRunResult:
    """Run one DAG run with ``dag.test()`` and return a :class:`DagRunResult` snapshot.

    :param dag_or_dag_id: a dag_id in the dags folder, or a DAG object (one built in a test is
        registered in the metadata DB first).
    :param run_conf: the run's ``conf`` (``{{ dag_run.conf }}`` / ``params`` overrides).
    :param logical_date: defaults to now. Re-using a logical date replaces the earlier run of that DAG.
        ``None`` makes a run without one, as a manual trigger (UI, REST API, ``airflow dags trigger``)
        does in Airflow 3: no ``ds`` in the context, only ``dag_run.run_after``. Airflow 2 gives every
        run a logical date, so there ``None`` means now.
    :param test_kwargs: passed on to ``dag.test()``: ``run_after``, ``conn_file_path``,
        ``variable_file_path``, ``mark_success_pattern``.
    """
    _prepare_airflow_for_tests()

    if isinstance(dag_or_dag_id, str):
        dag = load_dag(dag_or_dag_id)
    else:
        dag = dag_or_dag_id
        if not _is_in_dags_folder(dag):
            register_dag(dag)

    kwargs: dict[str, Any] = dict(test_kwargs)
    if run_conf is not None:
        kwargs["run_conf"] = run_conf
    if logical_date is not _MISSING and (logical_date is not None or AIRFLOW_3):
        kwargs["logical_date" if AIRFLOW_3 else "execution_date"] = logical_date

    buffer = io.StringIO()
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(old_out, buffer), _Tee(old_err, buffer)
    started = time.perf_counter()
    try:
        dag_run = dag.test(**kwargs)
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        if not AIRFLOW_3:
            _follow_current_std_streams()  # the handler dag.test() added writes to this run's tee
    duration = time.perf_counter() - started
    return DagRunResult._read(dag.dag_id, dag_run.run_id, log=buffer.getvalue(), duration=duration)


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------

_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(?P<task_id>\S+) map_index=(?P<map_index>-?\d+)")
_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(?P<task_id>\S+) map_index=(?P<map_index>-?\d+)")


@dataclass(frozen=True)
class _TaskInstanceInfo:
    state: str | None
    try_number: int
    max_tries: int


@dataclass(frozen=True)
class DagRunResult:
    """What one ``dag.test()`` run did, read from the metadata DB right after it finished."""

    dag_id: str
    run_id: str
    #: The dag run state as a plain string: ``"success"``, ``"failed"``, ...
    state: str
    conf: dict[str, Any]
    logical_date: datetime | None
    #: Everything written to sys.stdout/sys.stderr during the run (see the module docstring).
    log: str
    #: Wall-clock seconds ``dag.test()`` took.
    duration: float
    _tis: dict[tuple[str, int], _TaskInstanceInfo] = field(repr=False)
    _xcoms: dict[tuple[str, int, str], Any] = field(repr=False)
    _rendered: dict[tuple[str, int], dict[str, Any]] = field(repr=False)

    @classmethod
    def _read(cls, dag_id: str, run_id: str, *, log: str, duration: float) -> DagRunResult:
        from airflow.models.dagrun import DagRun
        from airflow.models.renderedtifields import RenderedTaskInstanceFields
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        if AIRFLOW_3:
            from airflow.models.xcom import XComModel
            from airflow.sdk.execution_time.xcom import XCom
        else:
            from airflow.models.xcom import BaseXCom as XComModel  # type: ignore[no-redef]
            from airflow.models.xcom import XCom

        with create_session() as session:
            dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
            if dag_run is None:
                raise RuntimeError(f"dag run {dag_id}/{run_id} not found after dag.test()")
            tis = {
                (ti.task_id, ti.map_index): _TaskInstanceInfo(
                    state=_plain(ti.state), try_number=ti.try_number, max_tries=ti.max_tries
                )
                for ti in session.scalars(
                    select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
                )
            }
            xcoms: dict[tuple[str, int, str], Any] = {}
            for row in session.scalars(
                select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
            ):
                try:
                    value = XCom.deserialize_value(row)
                except Exception:
                    value = row.value
                xcoms[(row.task_id, row.map_index, row.key)] = value
            rendered = {
                (r.task_id, r.map_index): dict(r.rendered_fields or {})
                for r in session.scalars(
                    select(RenderedTaskInstanceFields).where(
                        RenderedTaskInstanceFields.dag_id == dag_id,
                        RenderedTaskInstanceFields.run_id == run_id,
                    )
                )
            }
            return cls(
                dag_id=dag_id,
                run_id=run_id,
                state=str(_plain(dag_run.state)),
                conf=dict(dag_run.conf or {}),
                logical_date=dag_run.logical_date,
                log=log,
                duration=duration,
                _tis=tis,
                _xcoms=xcoms,
                _rendered=rendered,
            )

    # -- task instances -------------------------------------------------------------------------

    @property
    def task_states(self) -> dict[str | tuple[str, int], str | None]:
        """``{task_id: state}`` for unmapped tasks, ``{(task_id, map_index): state}`` for mapped ones."""
        return {
            (task_id if map_index == -1 else (task_id, map_index)): info.state
            for (task_id, map_index), info in sorted(self._tis.items())
        }

    def map_indexes(self, task_id: str) -> list[int]:
        """The map indexes of a mapped task's instances, in order (``[]`` if it is not mapped)."""
        self._require_task(task_id)
        return sorted(mi for (tid, mi) in self._tis if tid == task_id and mi >= 0)

    def task_state(self, task_id: str, map_index: int = -1) -> str | None:
        return self._ti(task_id, map_index).state

    def try_number(self, task_id: str, map_index: int = -1) -> int:
        """How many times the task instance was tried in this run (1 if it ran once)."""
        return self._ti(task_id, map_index).try_number

    def _ti(self, task_id: str, map_index: int) -> _TaskInstanceInfo:
        try:
            return self._tis[(task_id, map_index)]
        except KeyError:
            raise KeyError(
                f"no task instance {task_id!r} map_index={map_index} in {self.dag_id}/{self.run_id}; "
                f"there are: {sorted(self._tis)}"
            ) from None

    def _require_task(self, task_id: str) -> None:
        if not any(tid == task_id for (tid, _) in self._tis):
            raise KeyError(
                f"no task {task_id!r} in {self.dag_id}/{self.run_id}; "
                f"tasks: {sorted({t for t, _ in self._tis})}"
            )

    @property
    def failed_tasks(self) -> list[str | tuple[str, int]]:
        return [key for key, state in self.task_states.items() if state in ("failed", "upstream_failed")]

    def assert_success(self) -> None:
        """Raise AssertionError unless the run succeeded: task states, and each failed task's log."""
        if self.state == "success":
            return
        parts = [f"dag run {self.dag_id}/{self.run_id} ended {self.state!r}; task states: {self.task_states}"]
        for (task_id, map_index), info in sorted(self._tis.items()):
            if info.state == "failed":
                lines = self.task_log(task_id, map_index).splitlines()[-80:]
                parts.append(f"--- log of failed task {task_id} map_index={map_index} ---")
                parts.extend(lines)
        if len(parts) == 1:
            parts.append("--- last log lines ---")
            parts.extend(self.log.splitlines()[-60:])
        raise AssertionError("\n".join(parts))

    # -- XComs ----------------------------------------------------------------------------------

    @property
    def xcoms(self) -> dict[tuple[str, int, str], Any]:
        """Every XCom of the run: ``{(task_id, map_index, key): value}`` (a copy)."""
        return dict(self._xcoms)

    def xcom(
        self, task_id: str, key: str = "return_value", map_index: int | None = None, default: Any = _MISSING
    ) -> Any:
        """The deserialized XCom value (a dict pushed by a task comes back as a dict).

        For a mapped task and ``map_index=None``: the list of values over its map indexes, in order.
        A task that returns ``None`` pushes no XCom: missing values raise ``KeyError`` unless a
        ``default`` is given (for a mapped task it replaces each missing element).
        """
        if map_index is None:
            indexes = self.map_indexes(task_id)
            if indexes:
                values = [self._xcoms.get((task_id, mi, key), default) for mi in indexes]
                missing = [mi for mi, v in zip(indexes, values, strict=True) if v is _MISSING]
                if missing:
                    raise KeyError(
                        f"no XCom {key!r} for {task_id!r} map_indexes {missing}; "
                        f"states: {[self._tis[(task_id, mi)].state for mi in missing]}"
                    )
                return values
            map_index = -1
        try:
            return self._xcoms[(task_id, map_index, key)]
        except KeyError:
            if default is not _MISSING:
                return default
            have = sorted(k for (t, mi, k) in self._xcoms if t == task_id and mi == map_index)
            raise KeyError(
                f"no XCom {key!r} for {task_id!r} map_index={map_index} (state "
                f"{self._tis.get((task_id, map_index), _TaskInstanceInfo(None, 0, 0)).state!r}); "
                f"its keys: {have}"
            ) from None

    # -- rendered template fields ---------------------------------------------------------------

    def rendered_fields(self, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """The task's rendered template fields as Airflow stored them (after secret redaction)."""
        try:
            return dict(self._rendered[(task_id, map_index)])
        except KeyError:
            raise KeyError(
                f"no rendered fields for {task_id!r} map_index={map_index} (the task did not start?); "
                f"have: {sorted(self._rendered)}"
            ) from None

    # -- logs -----------------------------------------------------------------------------------

    def task_log(self, task_id: str, map_index: int = -1) -> str:
        """The lines of :attr:`log` between this task instance's ``[DAG TEST]`` start and end marks.

        Every attempt (retries, resumption after a deferral) is included, in order.
        """
        self._ti(task_id, map_index)
        out: list[str] = []
        inside = False
        for line in self.log.splitlines(keepends=True):
            start = _TASK_START.search(line)
            if start:
                inside = start["task_id"] == task_id and int(start["map_index"]) == map_index
            if inside:
                out.append(line)
            end = _TASK_END.search(line)
            if end and end["task_id"] == task_id and int(end["map_index"]) == map_index:
                inside = False
        return "".join(out)

    def leaks(self, secret: str) -> list[str]:
        """Where ``secret`` appears: the log, any XCom, any rendered field. ``[]`` means nowhere."""
        found = []
        if secret in self.log:
            found.append("log")
        for (task_id, map_index, key), value in sorted(self._xcoms.items()):
            if secret in repr(value):
                found.append(f"xcom {task_id}[{map_index}] {key}")
        for (task_id, map_index), fields in sorted(self._rendered.items()):
            for name, value in fields.items():
                if secret in repr(value):
                    found.append(f"rendered {task_id}[{map_index}] {name}")
        return found


def _plain(state: Any) -> Any:
    """A state enum as its plain string value (``DagRunState.SUCCESS`` -> ``"success"``)."""
    return getattr(state, "value", state)

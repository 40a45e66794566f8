"""Pytest configuration shared by every test in the project.

Airflow reads its configuration once, when ``airflow`` is first imported, so the environment below is
set at import time of this conftest (pytest imports the rootdir conftest before any test module).
Nothing here imports airflow at module level: pure unit tests that never request ``airflow_db`` do not
pay for Airflow's start-up (~3 s) or for creating the metadata database.

Environment set for the whole session (values from the calling shell are overridden on purpose, so a
developer's real ``AIRFLOW_HOME`` and metadata DB are never touched):

* ``AIRFLOW_HOME``: a fresh temp dir per session (``/tmp/airflow-o3-test-*``, removed at the end of the
  session unless ``AIRFLOW_O3_KEEP_TEST_HOME=1``), holding the SQLite ``airflow.db``.
* ``AIRFLOW__CORE__DAGS_FOLDER``: ``<repo>/dags`` (absolute): bundle ``dags-folder``.
* a second local bundle ``test-dags`` at ``$AIRFLOW_HOME/test_dags`` (env ``AIRFLOW_O3_TEST_DAGS_FOLDER``)
  for DAG files that tests write with the ``dag_file`` fixture.
* ``AIRFLOW__CORE__LOAD_EXAMPLES=False``, fixed JWT/API secrets, no colours.

``unit_test_mode`` is deliberately not set: it loads Airflow's own unit-test config, which turns
example DAGs back on and points at Airflow's test folders.

Fixtures:

* ``airflow_db`` (session): creates the metadata DB once (``airflow.utils.db.initdb()``: schema from
  the ORM, alembic head stamped, ~1.7 s), re-points Airflow's stdlib log handlers at the current
  ``sys.stdout`` (so ``capsys``/``capfd`` see every log line) and starts the in-process Execution API
  (its first request costs ~3.5 s). About 5-8 s in all, once per session. Request it in every test that
  runs a DAG (``pytestmark = pytest.mark.usefixtures("airflow_db")``).
* ``dag_file`` (function): ``dag_file(source, name=None) -> Path`` writes a DAG file into the
  ``test-dags`` bundle, so ``run_dag("<dag_id>")`` finds it; files are deleted after the test.
* ``airflow_home``, ``dags_folder``, ``test_dags_folder`` (session): the paths above.
* ``answering_standin`` (function): a stand-in server whose every reply is ``tests.helpers.answer_to``
  of the request; a test file that asserts which reply went with which request overrides
  ``o3_standin`` with it (``o3_standin_connection`` then points at it too).

Shared values (fast retry settings, a user message, the default-connection setup, scripted usage and
its list price) are in ``tests/helpers.py``.

Hook: before every test, once anything has imported airflow, Airflow's stdlib log handlers are made
to write to the *current* ``sys.stdout`` (so ``capsys``/``capfd`` capture them in every test, DAG run
or not).

See ``tests/dagrun.py`` for running DAGs end to end and ``tests/contract.py`` for the API contract.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_o3.testing import StandInServer

# The testing kit's fixtures (o3_standin, o3_standin_connection) are opt-in: installing the provider
# loads nothing into anyone's pytest run, so this suite asks for them as a user would.
pytest_plugins = ("airflow_o3.testing.pytest_plugin",)

REPO_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = REPO_ROOT / "dags"

# Make ``import airflow_o3`` and ``from tests.dagrun import run_dag`` work with a bare ``pytest`` too
# (``python -m pytest`` already has the cwd on sys.path; a bare ``pytest`` only gets ``tests/``).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

if "airflow.configuration" in sys.modules:  # pragma: no cover - a set-up error, not a test failure
    raise RuntimeError(
        "airflow was imported before tests/conftest.py could point it at a temporary AIRFLOW_HOME "
        "(a pytest plugin or a conftest.py above tests/ imports airflow at import time); the tests "
        "would use the real AIRFLOW_HOME and metadata DB. Move that import into a function or fixture."
    )

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="airflow-o3-test-")
TEST_DAGS_FOLDER = Path(_AIRFLOW_HOME) / "test_dags"
TEST_DAGS_FOLDER.mkdir()
_LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
_dag_file_counter = itertools.count()

_TEST_ENV = {
    "AIRFLOW_HOME": _AIRFLOW_HOME,
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
        [
            {"name": "dags-folder", "classpath": _LOCAL_BUNDLE, "kwargs": {}},  # path = DAGS_FOLDER
            {"name": "test-dags", "classpath": _LOCAL_BUNDLE, "kwargs": {"path": str(TEST_DAGS_FOLDER)}},
        ]
    ),
    "AIRFLOW_O3_TEST_DAGS_FOLDER": str(TEST_DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    # Airflow 2's initdb creates ~60 example connections whose passwords ("password", "airflow")
    # then get masked in every rendered field; Airflow 3 creates none.
    "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    # One SQLite file in the temp home (absolute path, hence four slashes). A tmpfs location was
    # measured: no faster, initdb is CPU-bound.
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{os.path.join(_AIRFLOW_HOME, 'airflow.db')}",
    # Fixed secrets so nothing is generated (and warned about) on the fly.
    "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-o3-test-jwt-secret-not-a-real-secret-64-bytes-for-sha-512",
    "AIRFLOW__API__SECRET_KEY": "airflow-o3-tests-api-secret-not-a-real-secret",
    "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
    "NO_COLOR": "1",
}
os.environ.update(_TEST_ENV)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("AIRFLOW_O3_KEEP_TEST_HOME"):
        shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The browser and real-deployment tests start Airflow's servers: they are slow tests too.
    for item in items:
        if item.get_closest_marker("browser") or item.get_closest_marker("deployment"):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Once anything has imported airflow, keep its stdlib log handlers writing to the *current*
    # sys.stdout so capsys/capfd see them (see tests/dagrun.py). Cheap no-op otherwise.
    if "airflow.settings" in sys.modules:
        from tests.dagrun import _follow_current_std_streams

        _follow_current_std_streams()


@pytest.fixture(autouse=True)
def _no_secrets_masked_from_earlier_tests() -> None:
    """Airflow 2's secrets masker is process-wide and masks a secret of any length: after a test whose
    connection password is ``"k"``, every later rendered field would show ``Tic***et``. Each test
    starts with none (Airflow 3 ignores secrets shorter than 5 characters, so it needs no reset)."""
    if "airflow.utils.log.secrets_masker" not in sys.modules:
        return
    from tests.dagrun import AIRFLOW_3

    if AIRFLOW_3:
        return
    from airflow.utils.log.secrets_masker import _secrets_masker

    masker = _secrets_masker()
    masker.patterns = set()
    masker.replacer = None


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The per-session temp ``AIRFLOW_HOME``."""
    return Path(_AIRFLOW_HOME)


@pytest.fixture(scope="session")
def dags_folder() -> Path:
    """The repo's ``dags/`` folder, which is ``AIRFLOW__CORE__DAGS_FOLDER`` for the session."""
    return DAGS_FOLDER


@pytest.fixture(scope="session")
def test_dags_folder() -> Path:
    """The ``test-dags`` bundle folder that ``dag_file`` writes to."""
    return TEST_DAGS_FOLDER


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """Create the SQLite metadata DB once per session and get Airflow ready to run DAGs."""
    # Imported here, not at module level: see the module docstring.
    from tests.dagrun import _prepare_airflow_for_tests

    _prepare_airflow_for_tests()
    yield


@pytest.fixture
def answering_standin() -> Iterator[StandInServer]:
    """A started stand-in that answers every chat request with ``answer_to(body)``."""
    from airflow_o3.testing import StandInServer
    from tests.helpers import answer_to

    with StandInServer(reply=answer_to) as server:
        yield server


@pytest.fixture
def dag_file() -> Iterator[Callable[..., Path]]:
    """Factory: ``dag_file(source, name=None) -> Path`` writes a DAG file into the test-dags bundle.

    ``source`` is dedented. It must mention both "airflow" and "dag" (Airflow's safe-mode file filter).
    ``name`` defaults to a name unique in the session. Run it with ``run_dag("<its dag_id>")``.
    """
    written: list[Path] = []

    def write(source: str, name: str | None = None) -> Path:
        path = TEST_DAGS_FOLDER / (name or f"test_dag_{next(_dag_file_counter)}.py")
        if path.suffix != ".py":
            path = path.with_suffix(".py")
        # A file rewritten within the same second with the same size would otherwise be run from a
        # stale __pycache__ entry (DagBag imports with SourceFileLoader).
        shutil.rmtree(TEST_DAGS_FOLDER / "__pycache__", ignore_errors=True)
        path.write_text(textwrap.dedent(source))
        written.append(path)
        return path

    yield write
    for path in written:
        path.unlink(missing_ok=True)

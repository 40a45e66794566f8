"""The example DAGs under a real Airflow 3 deployment, not ``dag.test()``.

One module-scoped deployment: a throw-away ``AIRFLOW_HOME`` (SQLite, LocalExecutor), ``airflow db
migrate``, then ``api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` as subprocesses, each
in its own process group with its log in the home. Two stand-in servers run in this process: a quick
one behind ``aimlapi_default`` for the examples, and a slow one (a few seconds per answer) behind
``aimlapi_slow`` for the deferrable DAG in ``tests/deployment/dags/``. Runs are created through the
REST API with no logical date, as the UI's trigger button does, and polled until they end.

Teardown stops every process it started (SIGTERM to each group, SIGKILL after a timeout, then any
task process that left the groups), also when a test fails or the run is interrupted with Ctrl-C.
A failing wait prints the task states, the task logs and the tails of the component logs.

Run only this with ``pytest -m deployment``; leave it out with ``-m 'not deployment'``. Skipped on
Airflow 2, whose commands and REST API differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_o3.testing import StandInServer
from tests.dagrun import AIRFLOW_3
from tests.helpers import answer_to

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.deployment,
    pytest.mark.skipif(not AIRFLOW_3, reason="needs Airflow 3's api-server, dag-processor and REST API v2"),
]

REPO = Path(__file__).resolve().parents[2]
TEST_DAGS = Path(__file__).resolve().parent / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
HEALTH = ("metadatabase", "scheduler", "triggerer", "dag_processor")
EXAMPLES = (
    "o3_daily_report",
    "o3_enrich_rows",
    "o3_batch_enrich",
    "o3_classify_tickets",
    "o3_daily_report_taskflow",
    "o3_classify_tickets_taskflow",
    "o3_branch_tickets",
)
DEFERRED_DAG = "o3_deferred_call"
SLOW_SECONDS = 4.0
"""How long the slow stand-in thinks before each answer: the window in which the call is in flight.
On SIGTERM the triggerer gives its trigger runner 10 s (SIGINT, then SIGTERM): a grace period that
lets this call finish fits in it."""
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
FINISHED = {"success", "failed"}


class ApiError(AssertionError):
    """The REST API answered with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _descendants(root: int) -> dict[int, str]:
    """Every live process below ``root``, as ``{pid: start time}`` (so a reused pid is not mistaken)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if (started := _start_time(pid)) is not None:
            found[pid] = started
        stack.extend(children.get(pid, []))
    return found


@dataclass
class Component:
    """One Airflow command running in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    known: dict[int, str] = field(default_factory=dict)

    def remember_children(self) -> None:
        """Note the processes below it now: task processes run in process groups of their own."""
        self.known.update(_descendants(self.process.pid))

    def signal(self, signum: int) -> None:
        """Send ``signum`` to its whole process group (a no-op once the group is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def finish(self, deadline: float) -> None:
        """Wait until ``deadline`` (monotonic) for it to exit, then SIGKILL its group and leftovers."""
        try:
            self.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        while self._survivors() and time.monotonic() < deadline + 3:
            time.sleep(0.1)
        for pid in self._survivors():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.signal(signal.SIGKILL)  # anything still in the group

    def _survivors(self) -> list[int]:
        return [pid for pid, started in self.known.items() if _start_time(pid) == started]

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class Deployment:
    """The running deployment: start and stop components, call the REST API, wait for runs."""

    def __init__(self, home: Path, port: int, env: dict[str, str]) -> None:
        self.home = home
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.env = env
        self.components: dict[str, Component] = {}
        self.stopped: list[Component] = []

    # -- processes -----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start ``airflow <name>`` in a new process group."""
        args = {
            "api-server": ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            # Their log servers listen on every interface at fixed ports; the api-server reads the
            # task logs from the shared home instead.
            "scheduler": ["--skip-serve-logs"],
            "triggerer": ["--skip-serve-logs"],
        }
        log = self.home / f"{name}.{len(self.stopped)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [AIRFLOW, name, *args.get(name, [])],
                env=self.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.components[name] = Component(name, process, log)

    def stop(self, *names: str, timeout: float = 15.0) -> None:
        """Stop these components together: SIGTERM to each group, SIGKILL what is left after ``timeout``."""
        components = [self.components.pop(name) for name in names]
        self.stopped.extend(components)
        for component in components:
            component.remember_children()
            component.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for component in components:
            component.finish(deadline)

    def stop_all(self) -> None:
        self.stop(*self.components)

    def terminate(self, name: str, timeout: float = 30.0) -> None:
        """SIGTERM the component's main process only, as ``kill PID`` or Kubernetes does, and wait."""
        component = self.components[name]
        component.remember_children()
        component.process.send_signal(signal.SIGTERM)
        try:
            component.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not stop within {timeout} s of SIGTERM:\n{component.tail()}")
        finally:
            self.stop(name)  # whatever it left behind

    # -- REST API ------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, attempts: int = 3) -> Any:
        """Call the REST API (the SimpleAuthManager makes everyone an admin: no token needed).

        SQLite lets one writer in at a time, and Airflow 3 answers a request that waited too long for
        the lock with 500 "Database error": such a request (or one that timed out) is sent again after
        a second, as a person would click again. Any other error fails with the API's answer.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        for attempt in range(1, attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                answer = error.read()[:2000]
                if not (error.code == 500 and b"Database error" in answer and attempt < attempts):
                    raise ApiError(f"{method} {path} -> {error.code}: {answer!r}", error.code) from None
            except TimeoutError:
                if attempt == attempts:
                    raise
            time.sleep(1)
        raise AssertionError("unreachable")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Create a run as the UI's trigger button does (no logical date); its run_id."""
        run_id = f"manual__deployment_test_{uuid.uuid4().hex[:12]}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        try:
            run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        except ApiError as error:
            if error.status != 409:  # 409: a first attempt that timed out had created it after all
                raise
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        assert run["logical_date"] is None
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        listing = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return {
            ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
            for ti in listing["task_instances"]
        }

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.api("GET", f"{path}?deserialize=true&stringify=false")["value"]

    # -- waiting -------------------------------------------------------------------------------

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Poll until the run has ended; its final state. Fails with the diagnosis after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (state := self.run_state(dag_id, run_id)) not in FINISHED:
            if time.monotonic() > deadline:
                pytest.fail(f"{dag_id}/{run_id} still {state!r} after {timeout} s\n{self.diagnosis(dag_id)}")
            time.sleep(0.5)
        return state

    def wait_until(self, what: str, check: Any, timeout: float, dag_id: str | None = None) -> Any:
        """Poll ``check()`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not (value := check()):
            if time.monotonic() > deadline:
                pytest.fail(f"not seen within {timeout} s: {what}\n{self.diagnosis(dag_id)}")
            time.sleep(0.25)
        return value

    def diagnosis(self, dag_id: str | None = None) -> str:
        """Task states and task logs of the DAG's runs, and the tail of every component's log."""
        parts: list[str] = []
        if dag_id is not None:
            with contextlib.suppress(Exception):
                for run in self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]:
                    states = self.task_states(dag_id, run["dag_run_id"])
                    parts.append(f"run {run['dag_run_id']}: {run['state']} {states}")
            for task_log in sorted((self.home / "logs").glob(f"dag_id={dag_id}/**/*.log")):
                parts.append(f"--- {task_log.relative_to(self.home)}")
                parts.extend(task_log.read_text(errors="replace").splitlines()[-30:])
        with contextlib.suppress(Exception):
            parts.append(f"import errors: {self.api('GET', '/api/v2/importErrors')['import_errors']}")
        for component in [*self.stopped, *self.components.values()]:
            parts.append(f"--- {component.log.name} (last lines)\n{component.tail()}")
        return "\n".join(parts)


def _child_env(home: Path, port: int, standin: StandInServer, slow: StandInServer) -> dict[str, str]:
    """The components' whole environment, built here: nothing of the pytest session's Airflow set-up
    (its AIRFLOW_HOME, DB, bundles) leaks in."""
    bundles = [
        {"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
        {"name": "deployment-test-dags", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(TEST_DAGS)}},
    ]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),  # this checkout's airflow_o3, as the tests use it
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",  # LocalExecutor forks this many workers up front
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-o3-deployment-test-jwt-secret-not-a-secret",
        "AIRFLOW__API__SECRET_KEY": "airflow-o3-deployment-test-api-secret-not-a-secret",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "NO_COLOR": "1",
        "AIRFLOW_CONN_AIMLAPI_DEFAULT": standin.connection_json("sk-deployment-test-key"),
        "AIRFLOW_CONN_AIMLAPI_SLOW": slow.connection_json("sk-deployment-test-key"),
        "O3_REPORT_DIR": str(home / "reports"),
    }


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInServer]:
    with StandInServer() as server:
        yield server


@pytest.fixture(scope="module")
def slow_standin() -> Iterator[StandInServer]:
    with StandInServer(latency=SLOW_SECONDS, reply=answer_to) as server:
        yield server


@pytest.fixture(scope="module")
def deployment(standin: StandInServer, slow_standin: StandInServer) -> Iterator[Deployment]:
    """Airflow 3 with all four components on LocalExecutor and SQLite; every process stopped after."""
    home = Path(tempfile.mkdtemp(prefix="airflow-o3-deploy-"))
    port = _free_port()
    deployment = Deployment(home, port, _child_env(home, port, standin, slow_standin))
    try:
        migrate = subprocess.run(
            [AIRFLOW, "db", "migrate"],
            env=deployment.env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-3000:]
        _use_write_ahead_log(home / "airflow.db")
        # The scheduler only after the api-server answers: a task it queues earlier finds no
        # Execution API, and fails.
        deployment.start("api-server")
        deployment.start("dag-processor")
        deployment.wait_until("the api-server answering", lambda: _healthy(deployment, "metadatabase"), 90)
        deployment.start("scheduler")
        deployment.start("triggerer")
        deployment.wait_until("every component healthy", lambda: _healthy(deployment, *HEALTH), timeout=60)
        wanted = {*EXAMPLES, DEFERRED_DAG}
        deployment.wait_until(f"DAGs parsed: {sorted(wanted)}", lambda: wanted <= _dag_ids(deployment), 60)
        yield deployment
    finally:
        deployment.stop_all()
        if not os.environ.get("AIRFLOW_O3_KEEP_TEST_HOME"):
            shutil.rmtree(home, ignore_errors=True)


def _use_write_ahead_log(database: Path) -> None:
    """WAL journal (kept in the file): readers no longer wait for a writer, only writers queue."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)


def _healthy(deployment: Deployment, *parts: str) -> bool:
    """Whether the health endpoint reports these parts healthy; fails at once if a component exited."""
    for component in deployment.components.values():
        if component.process.poll() is not None:
            pytest.fail(f"{component.name} exited with {component.process.returncode}:\n{component.tail()}")
    try:
        health = deployment.api("GET", "/api/v2/monitor/health")
    except (OSError, AssertionError):
        return False
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def _dag_ids(deployment: Deployment) -> set[str]:
    return {dag["dag_id"] for dag in deployment.api("GET", "/api/v2/dags?limit=100")["dags"]}


def _chat_prompts(server: StandInServer) -> list[str]:
    return [request.body["messages"][-1]["content"] for request in server.chat_requests]


# ------------------------------------------------------------------------------------------------
# The examples, triggered by hand (no logical date) and from the schedule
# ------------------------------------------------------------------------------------------------


def test_the_daily_report_runs_from_its_schedule(deployment):
    def scheduled_run() -> dict[str, Any] | None:
        listing = deployment.api("GET", "/api/v2/dags/o3_daily_report/dagRuns?run_type=scheduled")
        return next(iter(listing["dag_runs"]), None)

    run = deployment.wait_until("a scheduled run of o3_daily_report", scheduled_run, 30, "o3_daily_report")
    assert run["logical_date"] is not None
    state = deployment.wait_for_run("o3_daily_report", run["dag_run_id"], timeout=60)
    assert state == "success", deployment.diagnosis("o3_daily_report")
    report = Path(deployment.xcom("o3_daily_report", run["dag_run_id"], "save_report"))
    assert report.name == f"daily-report-{run['logical_date'][:10]}.md"


def test_every_example_dag_succeeds_when_triggered_through_the_rest_api(deployment, standin):
    runs = {dag_id: deployment.trigger(dag_id) for dag_id in EXAMPLES}
    states = {dag_id: deployment.wait_for_run(dag_id, run_id, timeout=90) for dag_id, run_id in runs.items()}
    failed = [dag_id for dag_id, state in states.items() if state != "success"]
    assert not failed, "\n\n".join(deployment.diagnosis(dag_id) for dag_id in failed)

    run_id = runs["o3_daily_report"]
    day = deployment.api("GET", f"/api/v2/dags/o3_daily_report/dagRuns/{run_id}")["run_after"][:10]
    write_report = deployment.api(
        "GET", f"/api/v2/dags/o3_daily_report/dagRuns/{run_id}/taskInstances/write_report"
    )
    prompt = write_report["rendered_fields"]["prompt"]
    assert prompt.startswith(f"Write the daily operations report for {day}, for the operations team.")
    assert prompt in _chat_prompts(standin)
    report = Path(deployment.xcom("o3_daily_report", run_id, "save_report"))
    assert report.name == f"daily-report-{day}.md"


def _utc_day() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


@pytest.mark.parametrize("dag_id", EXAMPLES)
def test_every_example_dag_runs_from_airflow_dags_test(deployment, dag_id):
    days = {_utc_day()}
    # `airflow dags test` runs the tasks in its own process; the running scheduler would also queue the
    # tasks of that run (an unpaused DAG) and the two would fight over them. Paused, the scheduler
    # leaves the run alone, as it would on a developer's machine with no scheduler.
    deployment.wait_until("the DAG parsed", lambda: dag_id in _dag_ids(deployment), 60, dag_id)
    deployment.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})
    try:
        done = subprocess.run(
            [AIRFLOW, "dags", "test", dag_id],
            env=deployment.env,
            cwd=deployment.home,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        deployment.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "state=success" in done.stdout + done.stderr, done.stdout[-3000:]
    if dag_id == "o3_daily_report":
        days.add(_utc_day())
        assert any((deployment.home / "reports" / f"daily-report-{day}.md").is_file() for day in days)


# ------------------------------------------------------------------------------------------------
# Deferrable calls in the triggerer
# ------------------------------------------------------------------------------------------------


def _task_state(deployment: Deployment, run_id: str) -> str | None:
    return deployment.task_states(DEFERRED_DAG, run_id).get("ask")


def _requests_for(server: StandInServer, topic: str) -> int:
    return sum(topic in prompt for prompt in _chat_prompts(server))


def test_a_deferrable_call_waits_in_the_triggerer_and_completes(deployment, slow_standin):
    topic = "deferred waiting"
    run_id = deployment.trigger(DEFERRED_DAG, {"topic": topic})
    deployment.wait_until(
        "the task in state 'deferred' while the stand-in thinks",
        lambda: _task_state(deployment, run_id) == "deferred" and _requests_for(slow_standin, topic) == 1,
        timeout=45,
        dag_id=DEFERRED_DAG,
    )
    assert deployment.wait_for_run(DEFERRED_DAG, run_id, timeout=60) == "success", deployment.diagnosis(
        DEFERRED_DAG
    )
    assert _requests_for(slow_standin, topic) == 1
    assert deployment.xcom(DEFERRED_DAG, run_id, "ask").startswith("Answer to: In one sentence: ")


def test_restarting_the_triggerer_mid_call_sends_the_request_once(deployment, slow_standin):
    topic = "triggerer restart"
    run_id = deployment.trigger(DEFERRED_DAG, {"topic": topic})
    deployment.wait_until(
        "the call in flight from the triggerer",
        lambda: _task_state(deployment, run_id) == "deferred" and _requests_for(slow_standin, topic) == 1,
        timeout=45,
        dag_id=DEFERRED_DAG,
    )
    deployment.terminate("triggerer")
    deployment.start("triggerer")
    state = deployment.wait_for_run(DEFERRED_DAG, run_id, timeout=60)
    assert state == "success", deployment.diagnosis(DEFERRED_DAG)
    assert _requests_for(slow_standin, topic) == 1


# ------------------------------------------------------------------------------------------------
# Approval: a person answers through the REST API, as the Required Actions page does
# ------------------------------------------------------------------------------------------------

APPROVAL_DAG = "o3_approval"
APPROVAL_THINKING_SECONDS = 2.0


def test_the_approval_example_waits_for_a_person_and_publishes_the_approved_edit(deployment, standin):
    deployment.wait_until(
        "o3_approval parsed", lambda: APPROVAL_DAG in _dag_ids(deployment), 60, APPROVAL_DAG
    )
    change = "Invoices can be downloaded as PDF (deployment test)."
    run_id = deployment.trigger(APPROVAL_DAG, {"change": change})
    deployment.wait_until(
        "the draft awaiting a person's answer",
        lambda: deployment.task_states(APPROVAL_DAG, run_id).get("draft") == "awaiting_input",
        timeout=60,
        dag_id=APPROVAL_DAG,
    )
    # Airflow 3.3.2 fails a task answered before the scheduler has seen its worker exit after parking
    # ("state mismatch": it takes the parked worker's exit for the resumed try's), and on a loaded
    # machine that exit can come seconds after the state shows: answer once the scheduler has seen it,
    # and after a person's few seconds of reading.
    parked = f"TaskInstanceKey(dag_id='{APPROVAL_DAG}', task_id='draft', run_id='{run_id}'"
    scheduler_log = deployment.components["scheduler"].log
    deployment.wait_until(
        "the scheduler has seen the parked worker exit",
        lambda: any(
            "Received executor event" in line and parked in line
            for line in scheduler_log.read_text(errors="replace").splitlines()
        ),
        timeout=60,
        dag_id=APPROVAL_DAG,
    )
    time.sleep(APPROVAL_THINKING_SECONDS)
    hitl = f"/api/v2/dags/{APPROVAL_DAG}/dagRuns/{run_id}/taskInstances/draft/-1/hitlDetails"
    request = deployment.api("GET", hitl)
    assert request["options"] == ["Approve", "Reject"]
    assert request["params"]["reply"]["value"] in request["body"]

    edit = "New: invoices as PDF, approved in the deployment test."
    deployment.api("PATCH", hitl, {"chosen_options": ["Approve"], "params_input": {"reply": edit}})
    state = deployment.wait_for_run(APPROVAL_DAG, run_id, timeout=60)
    assert state == "success", deployment.diagnosis(APPROVAL_DAG)
    assert Path(deployment.xcom(APPROVAL_DAG, run_id, "publish")).read_text(encoding="utf-8") == edit
    assert sum(change in prompt for prompt in _chat_prompts(standin)) == 1, "paid once"

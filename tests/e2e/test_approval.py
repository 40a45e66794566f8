"""require_approval end to end: real DAG runs with dag.test() against the stand-in server, answered
the way a person answers in Airflow's UI: through the HITL endpoints of Airflow's REST API (the
Core API app, served in this process). Airflow 3.1+ only; the refusal on Airflow 2 is tested in
tests/operators/test_approval.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_o3.testing import Reply
from tests.dagrun import AIRFLOW_3, run_dag

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = [
    pytest.mark.usefixtures("airflow_db"),
    pytest.mark.skipif(not AIRFLOW_3, reason="human-in-the-loop needs Airflow 3.1+"),
]

KEY = "standin-test-key"
REPLY = "Ship the tide tables on **Friday**."

DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow.sdk import task

from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    reply = O3MiniOperator(
        task_id="ask",
        prompt="When do we ship the tide tables?",
        require_approval=True,
        approval_timeout={timeout},
        deferrable={deferrable},
        {extra}
    )

    @task
    def downstream(text):
        print(f"downstream got: {{text!r}}")
        return text

    downstream(reply.output)
"""


def _dag(dag_id: str, *, timeout: float = 600, deferrable: bool = False, extra: str = "") -> str:
    return DAG.format(dag_id=dag_id, timeout=timeout, deferrable=deferrable, extra=extra)


class Reviewer:
    """A person answering the approval request through Airflow's REST API, from another thread,
    while dag.test() waits for the answer."""

    patience = 60.0
    """Seconds to wait for the request before failing the runs (dag.test() would wait for ever)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.request: dict[str, Any] | None = None
        self.status: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def answer(self, dag_id: str, options: list[str], params_input: dict[str, Any] | None = None) -> None:
        """Answer the first approval request of ``dag_id`` once it appears."""
        self._start(lambda: self._answer(dag_id, options, params_input))

    def let_it_time_out(self, dag_id: str) -> None:
        """Answer nothing; once the request's deadline has passed, run the scheduler's sweep of
        overdue requests (dag.test() runs no scheduler)."""
        self._start(lambda: self._sweep_after_deadline(dag_id))

    def _start(self, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except BaseException as error:  # reported by join(), in the test
                self._error = error

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Stop waiting, and raise what went wrong in the reviewer's thread, if anything did."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._error is not None:
            raise self._error

    def _pending(self, dag_id: str) -> dict[str, Any]:
        """The request of ``dag_id`` waiting for an answer. If none comes in time, the dag's running
        runs are marked failed, so dag.test() ends."""
        deadline = time.monotonic() + self.patience
        while time.monotonic() < deadline and not self._stop.is_set():
            response = self._client.get(f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails")
            for detail in response.json().get("hitl_details", []):
                if detail["task_instance"]["state"] == "awaiting_input" and not detail["response_received"]:
                    return dict(detail)
            time.sleep(0.2)
        self._fail_running_runs(dag_id)
        raise AssertionError(f"no approval request of {dag_id} awaiting input; its runs were failed")

    def _fail_running_runs(self, dag_id: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self._stop.is_set():
            runs = self._client.get(f"/api/v2/dags/{dag_id}/dagRuns?state=running").json()["dag_runs"]
            for run in runs:
                path = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}"
                self._client.patch(path, json={"state": "failed"})
            if runs:
                return
            time.sleep(0.2)

    def _answer(self, dag_id: str, options: list[str], params_input: dict[str, Any] | None) -> None:
        self.request = detail = self._pending(dag_id)
        ti = detail["task_instance"]
        response = self._client.patch(
            f"/api/v2/dags/{dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/-1/hitlDetails",
            json={"chosen_options": options, "params_input": params_input or {}},
        )
        self.status = response.status_code

    def _sweep_after_deadline(self, dag_id: str) -> None:
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        self.request = self._pending(dag_id)
        time.sleep(1.5)  # past the 1 s approval_timeout
        SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()


@pytest.fixture(scope="module")
def rest_api() -> Iterator[Any]:
    """Airflow's Core REST API (the api-server's app) in this process, every caller an admin."""
    from fastapi.testclient import TestClient

    patch = pytest.MonkeyPatch()
    patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    from airflow.api_fastapi.app import create_app, purge_cached_app

    with TestClient(create_app(apps="core"), base_url="http://127.0.0.1") as client:
        yield client
    purge_cached_app()
    patch.undo()


@pytest.fixture
def reviewer(rest_api: Any) -> Iterator[Reviewer]:
    person = Reviewer(rest_api)
    yield person
    person.join()


def test_an_approved_reply_reaches_downstream_and_is_paid_once(dag_file, o3_standin_connection, reviewer):
    o3_standin_connection.script(Reply(content=REPLY))
    dag_file(_dag("o3_approval_approve"))
    reviewer.answer("o3_approval_approve", ["Approve"])
    result = run_dag("o3_approval_approve")

    result.assert_success()
    assert reviewer.status == 200
    assert result.xcom("ask") == REPLY
    assert result.xcom("downstream") == REPLY
    assert len(o3_standin_connection.chat_requests) == 1, "resuming after the approval asks nothing again"
    assert result.xcom("ask", key="usage")["attempts"] == 1
    assert result.xcom("ask", key="completion")["finish_reason"] == "stop"
    assert reviewer.request is not None
    assert REPLY in reviewer.request["body"]
    assert reviewer.request["options"] == ["Approve", "Reject"]
    assert reviewer.request["defaults"] == ["Reject"]
    assert reviewer.request["params"]["reply"]["value"] == REPLY
    assert result.leaks(KEY) == []


def test_an_edited_reply_is_what_downstream_receives(dag_file, o3_standin_connection, reviewer):
    o3_standin_connection.script(Reply(content=REPLY))
    dag_file(_dag("o3_approval_edit"))
    reviewer.answer("o3_approval_edit", ["Approve"], {"reply": "Ship on Monday."})
    result = run_dag("o3_approval_edit")

    result.assert_success()
    assert result.xcom("ask") == "Ship on Monday."
    assert result.xcom("downstream") == "Ship on Monday."
    assert "approved by" in result.task_log("ask") and "with their edit" in result.task_log("ask")
    assert len(o3_standin_connection.chat_requests) == 1


def test_a_rejected_reply_skips_the_task_and_downstream(dag_file, o3_standin_connection, reviewer):
    o3_standin_connection.script(Reply(content=REPLY))
    dag_file(_dag("o3_approval_reject"))
    reviewer.answer("o3_approval_reject", ["Reject"])
    result = run_dag("o3_approval_reject")

    assert result.task_state("ask") == "skipped"
    assert result.task_state("downstream") == "skipped"
    assert result.xcom("ask", default=None) is None, "a rejected reply is not handed on"
    assert result.xcom("ask", key="usage")["attempts"] == 1, "what was paid is still reported"
    assert "The reply was rejected by" in result.task_log("ask")
    assert len(o3_standin_connection.chat_requests) == 1


@pytest.mark.slow  # waits out the approval timeout
def test_no_answer_within_the_timeout_rejects_the_reply(dag_file, o3_standin_connection, reviewer):
    o3_standin_connection.script(Reply(content=REPLY))
    dag_file(_dag("o3_approval_timeout", timeout=1))
    reviewer.let_it_time_out("o3_approval_timeout")
    result = run_dag("o3_approval_timeout")

    assert result.task_state("ask") == "skipped"
    assert result.task_state("downstream") == "skipped"
    assert "not approved in time, so rejected" in result.task_log("ask")
    assert len(o3_standin_connection.chat_requests) == 1


def test_a_deferred_call_waits_for_approval_after_the_trigger_and_pays_once(
    dag_file, o3_standin_connection, reviewer
):
    o3_standin_connection.script(Reply(content=REPLY))
    dag_file(_dag("o3_approval_deferred", deferrable=True))
    reviewer.answer("o3_approval_deferred", ["Approve"], {"reply": "Ship on Monday."})
    result = run_dag("o3_approval_deferred")

    result.assert_success()
    assert "running trigger in line" in result.task_log("ask")
    assert result.xcom("downstream") == "Ship on Monday."
    assert len(o3_standin_connection.chat_requests) == 1


SCHEMA = (
    'response_format={"type": "object", "properties": {"day": {"type": "string"}}, '
    '"required": ["day"], "additionalProperties": False},'
)


def test_an_edited_json_reply_is_parsed_and_checked_against_the_schema(
    dag_file, o3_standin_connection, reviewer
):
    o3_standin_connection.script(Reply(content='{"day": "Friday"}'))
    dag_file(_dag("o3_approval_json", extra=SCHEMA))
    reviewer.answer("o3_approval_json", ["Approve"], {"reply": '{"day": "Monday"}'})
    result = run_dag("o3_approval_json")

    result.assert_success()
    assert reviewer.request is not None
    assert reviewer.request["params"]["reply"]["value"] == '{\n  "day": "Friday"\n}'
    assert result.xcom("downstream") == {"day": "Monday"}


def test_an_edited_json_reply_that_breaks_the_schema_fails_without_a_retry(
    dag_file, o3_standin_connection, reviewer
):
    o3_standin_connection.script(Reply(content='{"day": "Friday"}'))
    dag_file(_dag("o3_approval_bad_json", extra=SCHEMA + " retries=2, retry_delay=0,"))
    reviewer.answer("o3_approval_bad_json", ["Approve"], {"reply": '{"weekday": "Monday"}'})
    result = run_dag("o3_approval_bad_json")

    assert result.task_state("ask") == "failed"
    assert result.try_number("ask") == 1, "the paid reply is not asked for again"
    assert "the approved reply field is not the JSON the task hands on" in result.task_log("ask")
    assert result.task_state("downstream") == "upstream_failed"
    assert len(o3_standin_connection.chat_requests) == 1


def test_the_example_dag_publishes_only_the_approved_edit(o3_standin, monkeypatch, tmp_path, reviewer):
    from tests.contract import validate_request_body

    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", o3_standin.connection_json(KEY))
    monkeypatch.setenv("O3_REPORT_DIR", str(tmp_path))
    o3_standin.script(Reply(content="**New:** download your invoices as PDF."))
    reviewer.answer("o3_approval", ["Approve"], {"reply": "New: invoices as PDF, on the billing page."})
    result = run_dag("o3_approval", run_conf={"change": "Invoices can be downloaded as PDF."})

    result.assert_success()
    (request,) = o3_standin.chat_requests
    validate_request_body(request.body, strict=True)
    assert request.body["messages"][1]["content"].endswith("Invoices can be downloaded as PDF.")
    assert reviewer.request is not None
    assert "**New:** download your invoices as PDF." in reviewer.request["body"]
    published = Path(result.xcom("publish"))
    assert published.parent == tmp_path
    assert published.read_text(encoding="utf-8") == "New: invoices as PDF, on the billing page."
    assert result.leaks(KEY) == []


def test_the_example_dag_publishes_nothing_when_the_draft_is_rejected(
    o3_standin, monkeypatch, tmp_path, reviewer
):
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", o3_standin.connection_json(KEY))
    monkeypatch.setenv("O3_REPORT_DIR", str(tmp_path))
    reviewer.answer("o3_approval", ["Reject"])
    result = run_dag("o3_approval")

    assert result.task_states == {"draft": "skipped", "publish": "skipped"}
    assert list(tmp_path.iterdir()) == []
    assert len(o3_standin.chat_requests) == 1


BRANCH_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow.sdk import task


@task.o3_mini_branch(require_approval=True)
def route():
    return "Is this ticket about billing or a bug? It says: I was charged twice."


@task
def billing():
    return "billing"


@task
def bug():
    return "bug"


with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    route() >> [billing(), bug()]
"""


@pytest.mark.parametrize(
    ("edit", "taken", "skipped"),
    [(None, "billing", "bug"), ('{"choice": "bug", "reason": "a person knows better"}', "bug", "billing")],
)
def test_a_branch_that_needs_approval_follows_the_approved_choice(
    dag_file, o3_standin_connection, reviewer, edit, taken, skipped
):
    dag_id = f"o3_approval_branch_{taken}"
    o3_standin_connection.script(Reply(content='{"choice": "billing", "reason": "charged twice"}'))
    dag_file(BRANCH_DAG.format(dag_id=dag_id))
    reviewer.answer(dag_id, ["Approve"], {"reply": edit} if edit else None)
    result = run_dag(dag_id)

    assert result.task_state(taken) == "success"
    assert result.task_state(skipped) == "skipped", "the branch not approved is skipped"
    assert result.xcom("route")["task_ids"] == [taken]
    assert len(o3_standin_connection.chat_requests) == 1

"""The connection's daily cap and the batch's balance check, in real DAG runs against the stand-in.

The pair test runs two tasks in two processes at once (``airflow tasks test``), sharing one
connection whose ``daily_budget_usd`` the two together exceed: the second is stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_o3.testing import Body, StandInServer
from airflow_o3.testing.billing import billing_base_url
from tests.dagrun import AIRFLOW_3, run_dag
from tests.helpers import point_default_connection

pytestmark = pytest.mark.usefixtures("airflow_db")

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
KEY = "sk-daily-cap-0123456789"

CALLS_DAG = """
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    paid = O3MiniOperator(task_id="paid", prompt="First question")
    refused = O3MiniOperator(
        task_id="refused", prompt="Second question", retries=2, retry_delay=timedelta(0)
    )
    deferred = O3MiniOperator(
        task_id="deferred", prompt="Third question", deferrable=True, retries=2, retry_delay=timedelta(0)
    )
    paid >> refused >> deferred
    refused.trigger_rule = deferred.trigger_rule = "all_done"
"""

BATCH_DAG = """
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniBatchOperator, O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    warm_up = O3MiniOperator(task_id="warm_up", prompt="One paid call shows the credits-per-dollar rate")
    batch = O3MiniBatchOperator(
        task_id="batch",
        items=[f"row {{n}}" for n in range(10)],
        prompt="Classify {{{{ item }}}}",
        max_completion_tokens=1000,
        limits={{"max_concurrency": 1}},
        on_item_error="continue",
        retries=2,
        retry_delay=timedelta(0),
        {extra}
    )
    warm_up >> batch
"""


def point_connection(monkeypatch, server: StandInServer, ledger: Path, **extras: object) -> str:
    """Set the default connection to the stand-in (chat and billing) with these extras; return it."""
    extras = {"billing_base_url": billing_base_url(server), "ledger_path": str(ledger), **extras}
    return point_default_connection(monkeypatch, server.base_url, KEY, **extras)


def test_single_and_deferred_calls_after_the_cap_fail_for_good_naming_connection_cap_and_spend(
    dag_file, o3_standin, monkeypatch, tmp_path
):
    point_connection(monkeypatch, o3_standin, tmp_path, daily_budget_usd=0.000001)
    dag_file(CALLS_DAG.format(dag_id="o3_cap_calls"))
    result = run_dag("o3_cap_calls")
    assert result.task_state("paid") == "success"
    assert [request.body["messages"][0]["content"] for request in o3_standin.chat_requests] == [
        "First question"
    ]
    for task_id in ("refused", "deferred"):
        assert result.task_state(task_id) == "failed"
        assert result.try_number(task_id) == 1, "a retry today would meet the same cap"
        log = result.task_log(task_id)
        assert "the daily budget of connection 'aimlapi_default' is reached" in log
        assert "of daily_budget_usd $0.000001" in log
        assert KEY not in log


def test_a_batch_stops_at_the_cap_whatever_on_item_error(dag_file, o3_standin, monkeypatch, tmp_path):
    point_connection(monkeypatch, o3_standin, tmp_path, daily_budget_usd=0.000001)
    dag_file(BATCH_DAG.format(dag_id="o3_cap_batch", extra=""))
    result = run_dag("o3_cap_batch")
    assert result.task_state("warm_up") == "success"
    assert result.task_state("batch") == "failed"
    assert result.try_number("batch") == 1
    assert len(o3_standin.chat_requests) == 1, "only the warm-up call: the batch sent nothing"
    log = result.task_log("batch")
    assert "item 0 of 10 failed: the daily budget of connection 'aimlapi_default' is reached" in log


@pytest.mark.parametrize(("credits", "started"), [(10_000_000, True), (20_000, False)])
def test_min_balance_usd_refuses_a_batch_the_balance_does_not_cover_before_any_request(
    dag_file, o3_standin, monkeypatch, tmp_path, credits, started
):
    point_connection(monkeypatch, o3_standin, tmp_path)
    o3_standin.billing.credits = credits
    dag_file(BATCH_DAG.format(dag_id=f"o3_min_balance_{credits}", extra="min_balance_usd=1.0,"))
    result = run_dag(f"o3_min_balance_{credits}")
    chat = [request.body["messages"][0]["content"] for request in o3_standin.chat_requests]
    balance_reads = [request for request in o3_standin.requests if request.path == "/v1/billing/balance"]
    assert len(balance_reads) == 1
    assert balance_reads[0].header("Authorization") == f"Bearer {KEY}"
    log = result.task_log("batch")
    if started:
        result.assert_success()
        assert len(chat) == 11
        assert "Balance checked: the balance of connection 'aimlapi_default' is about $" in log
        return
    assert result.task_state("batch") == "failed"
    assert result.try_number("batch") == 1, "the same balance would refuse a retry"
    assert chat == ["One paid call shows the credits-per-dollar rate"], "no item of the batch was sent"
    assert "the batch did not start, nothing was sent" in log
    assert "(20,000 credits)" in log
    assert "the 10 request(s) of this batch are estimated at up to $0.05" in log
    assert "min_balance_usd is $1.00" in log
    assert "fix: top up the AI/ML API account" in log


PAIR_DAG = """
import os
import time

import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniBatchOperator


def wait_for_the_go(context):
    task_id = context["ti"].task_id
    folder = os.environ["O3_PAIR_SIGNALS"]
    open(os.path.join(folder, f"ready-{{task_id}}"), "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(folder, f"go-{{task_id}}")):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.02)


with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    for task_id in ("first", "second"):
        O3MiniBatchOperator(
            task_id=task_id,
            items=[f"{{task_id}} {{n}}" for n in range(3)],
            prompt="{{{{ item }}}}",
            limits={{"max_concurrency": 1}},
            pre_execute=wait_for_the_go,
        )
"""

CENT = Body(
    json={
        "id": "chatcmpl-cent",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "o3-mini-2025-01-31",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok", "refusal": None},
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        "meta": {"usage": {"credits_used": 20000, "usd_spent": 0.01}},
    }
)
"""A reply that costs exactly one cent."""

LATENCY = 2.0


def start_task(
    task_id: str, logical_date: str, env: dict[str, str], subdir: tuple[str, ...]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [AIRFLOW, "tasks", "test", "o3_cap_pair", task_id, logical_date, *subdir],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def wait_until(condition, processes, seconds: float = 180.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        for process in processes:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_tasks_in_two_processes_that_together_exceed_the_cap_the_second_is_stopped(
    dag_file, test_dags_folder, monkeypatch, tmp_path
):
    """Each task asks 3 one-cent questions, one at a time, 2 s each; the cap is 4 cents.

    ``first`` starts 1 s before ``second``. When ``second`` has its 2 replies (at 5 s), the day's
    spend is 4 cents (``first``'s 2 and its own 2): its third request never starts. ``first``'s third
    started at 4 s, when 3 cents were spent, and is the call in flight that the cap may overshoot by.
    """
    dag_file(PAIR_DAG.format(dag_id="o3_cap_pair"), name="o3_cap_pair.py")
    if AIRFLOW_3:  # `tasks test` finds the DAG in the metadata DB: a first run (own ledger) puts it there
        with StandInServer() as quick:
            point_connection(monkeypatch, quick, tmp_path / "registration")
            monkeypatch.setenv("O3_PAIR_SIGNALS", str(tmp_path))
            for task_id in ("first", "second"):
                (tmp_path / f"go-{task_id}").touch()
            run_dag("o3_cap_pair").assert_success()
    with StandInServer(latency=LATENCY) as server:
        connection = point_connection(
            monkeypatch, server, tmp_path / "ledger", daily_budget_usd=0.04, ledger_refresh_seconds=0
        )
        server.script(*[CENT] * 6)
        signals = tmp_path / "pair-signals"
        signals.mkdir()
        env = {**os.environ, "AIRFLOW_CONN_AIMLAPI_DEFAULT": connection, "O3_PAIR_SIGNALS": str(signals)}
        subdir = () if AIRFLOW_3 else ("--subdir", str(test_dags_folder))
        first = start_task("first", "2026-03-04", env, subdir)
        second = start_task("second", "2026-03-05", env, subdir)
        both = (first, second)
        try:
            wait_until(lambda: all((signals / f"ready-{t}").exists() for t in ("first", "second")), both)
            (signals / "go-first").touch()
            wait_until(lambda: server.chat_requests, both)
            time.sleep(LATENCY / 2)
            (signals / "go-second").touch()
            first_output, _ = first.communicate(timeout=120)
            second_output, _ = second.communicate(timeout=120)
        finally:
            for process in both:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        requests = server.chat_requests

    def sent_by(task_id: str) -> list[str]:
        return [
            r.body["messages"][0]["content"]
            for r in requests
            if r.body["messages"][0]["content"].startswith(task_id)
        ]

    assert "Batch finished: 3/3 items done (0 failed)" in first_output, first_output[-4000:]
    assert "AirflowFailException" not in first_output
    assert sent_by("first") == ["first 0", "first 1", "first 2"]
    assert sent_by("second") == ["second 0", "second 1"], "the second task's third request never started"
    assert "AirflowFailException" in second_output, "failed for good: a retry today meets the same cap"
    assert "item 2 of 3 failed: the daily budget of connection 'aimlapi_default' is reached" in second_output
    assert "of daily_budget_usd $0.040000" in second_output
    assert "$0.040000 spent on" in second_output
    assert KEY not in first_output + second_output
    # The cap was reached when the fourth one-cent reply went out; every request began before it.
    reached = sorted(request.received_at + LATENCY for request in requests)[3]
    assert all(request.received_at < reached for request in requests)

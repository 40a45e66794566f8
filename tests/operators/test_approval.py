"""require_approval's checks when the DAG is parsed (Airflow 3 and 2.11), and the Airflow 3.1/3.2
path (deferral to the standard provider's HITLTrigger), which dag.test() cannot run in line on the
installed Airflow 3.3 (its in-process supervisor does not answer the trigger's HITL requests).
The approval itself is tested end to end in tests/e2e/test_approval.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators import O3MiniOperator
from airflow_o3.operators.approval import airflow_version

HITL_AIRFLOW = airflow_version() >= (3, 1)


@pytest.mark.skipif(HITL_AIRFLOW, reason="this Airflow has human-in-the-loop")
def test_require_approval_before_airflow_3_1_is_refused_when_the_dag_is_parsed():
    with pytest.raises(InvalidRequestError) as error:
        O3MiniOperator(task_id="ask", prompt="Hello", require_approval=True)
    message = str(error.value)
    assert message.startswith("ask: require_approval needs Airflow's human-in-the-loop, in Airflow 3.1")
    assert "fix: upgrade Airflow, or drop require_approval" in message


def test_without_require_approval_every_airflow_builds_the_operator():
    operator = O3MiniOperator(task_id="ask", prompt="Hello")
    assert operator.require_approval is False


@pytest.mark.parametrize("timeout", [0, -5, "4h", None, True])
def test_an_approval_timeout_that_is_no_positive_duration_is_refused_naming_it(timeout):
    with pytest.raises(InvalidRequestError) as error:
        O3MiniOperator(task_id="ask", prompt="Hello", approval_timeout=timeout)
    assert str(error.value).startswith(f"ask: approval_timeout is {timeout!r} (fix: a positive timedelta")


def test_an_approval_timeout_in_seconds_is_a_timedelta():
    operator = O3MiniOperator(task_id="ask", prompt="Hello", approval_timeout=90)
    assert operator.approval_timeout == timedelta(seconds=90)


class _TaskInstance:
    id = "0193b6a2-6f5a-7f3e-9d3c-2b1e0c5a4d11"


@pytest.mark.skipif(not HITL_AIRFLOW, reason="human-in-the-loop needs Airflow 3.1+")
def test_on_airflow_3_1_and_3_2_the_reply_travels_in_the_deferral_to_the_hitl_trigger(monkeypatch):
    from airflow.providers.common.compat.sdk import TaskDeferred
    from airflow.providers.standard.triggers.hitl import HITLTrigger
    from airflow.sdk.execution_time import hitl
    from airflow.sdk.timezone import utcnow

    import airflow_o3.operators.approval as approval

    requests: list[dict[str, Any]] = []
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **request: requests.append(request))
    monkeypatch.setattr(approval, "airflow_version", lambda: (3, 2))
    operator = O3MiniOperator(
        task_id="ask", prompt="Hello", require_approval=True, approval_timeout=timedelta(hours=2)
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.await_approval({"task_instance": _TaskInstance()}, {"day": "Friday"})

    assert deferred.value.method_name == "approval_complete"
    assert deferred.value.kwargs == {"reply": {"day": "Friday"}}
    trigger = deferred.value.trigger
    assert isinstance(trigger, HITLTrigger)
    classpath, arguments = trigger.serialize()
    assert classpath == "airflow.providers.standard.triggers.hitl.HITLTrigger"
    assert arguments["options"] == ["Approve", "Reject"]
    assert arguments["defaults"] == ["Reject"]
    assert arguments["params"]["reply"]["value"] == '{\n  "day": "Friday"\n}'
    remaining = arguments["timeout_datetime"] - utcnow()
    assert timedelta(hours=1, minutes=59) < remaining <= timedelta(hours=2)
    assert [request["ti_id"] for request in requests] == [_TaskInstance.id]
    assert requests[0]["defaults"] == ["Reject"]


@pytest.mark.skipif(not HITL_AIRFLOW, reason="human-in-the-loop needs Airflow 3.1+")
def test_an_approval_that_could_not_be_read_fails_the_task_without_a_retry():
    from airflow.providers.common.compat.sdk import AirflowFailException

    operator = O3MiniOperator(task_id="ask", prompt="Hello", require_approval=True)
    with pytest.raises(AirflowFailException) as error:
        operator.approval_complete(
            {}, reply="text", event={"error": "reply: not a string", "error_type": "validation"}
        )
    assert str(error.value) == "ask: the approval of the reply failed (validation): reply: not a string"

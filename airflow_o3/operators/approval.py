"""Approval before the reply flows on: a person approves, edits or rejects o3-mini's reply in
Airflow's UI (Browse > Required Actions) before downstream tasks see it (``docs/approval.md``).

Built on Airflow's human-in-the-loop (Airflow 3.1+, the standard provider's HITL), as its
``HITLOperator`` does: the task writes a HITL request and waits without a worker slot, in the
``awaiting_input`` state on Airflow 3.3+, deferred to ``HITLTrigger`` on 3.1 and 3.2. The reply
travels with the wait (the task's ``next_kwargs``), so nothing is asked, or paid, again when the
task resumes. Imported at DAG parse: the HITL machinery is imported only when a task asks for it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_o3.errors import InvalidRequestError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context

    _OperatorBase = BaseOperator
else:
    _OperatorBase = object

APPROVE = "Approve"
REJECT = "Reject"
OPTIONS = [APPROVE, REJECT]
REPLY_FIELD = "reply"
"""The name of the editable field holding the reply in the approval form."""
DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=24)
RESUME_METHOD = "approval_complete"
_MINIMUM_AIRFLOW = (3, 1)


def airflow_version() -> tuple[int, int]:
    """The running Airflow's major and minor version."""
    from airflow import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    return major, minor


def approval_support_problem() -> str | None:
    """Why this Airflow cannot hold a reply for approval, if it cannot."""
    running = airflow_version()
    if running < _MINIMUM_AIRFLOW:
        return (
            f"require_approval needs Airflow's human-in-the-loop, in Airflow 3.1 and later; this is "
            f"Airflow {running[0]}.{running[1]} (fix: upgrade Airflow, or drop require_approval and "
            "put an approval step of your own after the task)"
        )
    try:
        import airflow.providers.standard.triggers.hitl  # noqa: F401
    except ImportError:
        return (
            "require_approval needs the human-in-the-loop of apache-airflow-providers-standard, which "
            "is not installed (fix: pip install apache-airflow-providers-standard)"
        )
    return None


def checked_approval_timeout(task_id: str | None, approval_timeout: Any) -> timedelta:
    """``approval_timeout`` as a timedelta, refused unless it is a positive duration.

    :raises InvalidRequestError: naming the task, the value and the fix.
    """
    duration = approval_timeout
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        duration = timedelta(seconds=duration)
    if not isinstance(duration, timedelta) or duration <= timedelta(0):
        raise InvalidRequestError(
            f"{task_id}: approval_timeout is {approval_timeout!r} (fix: a positive timedelta or number "
            "of seconds, e.g. timedelta(hours=4); every wait for a person is bounded, and when it ends "
            "the reply is rejected)"
        )
    return duration


def reply_field_text(reply: Any) -> str:
    """The reply as the reviewer sees and edits it: text as it is, JSON data as indented JSON."""
    if isinstance(reply, str):
        return reply
    return json.dumps(reply, indent=2, ensure_ascii=False)


def approval_body(reply: Any) -> str:
    """The Markdown shown above the options: the reply, then what each option does."""
    shown = reply if isinstance(reply, str) else f"```json\n{reply_field_text(reply)}\n```"
    return (
        f"{shown}\n\n---\n\n**{APPROVE}** passes this reply to the downstream tasks; edit the "
        f"*{REPLY_FIELD}* field first to pass your version instead. **{REJECT}** skips the downstream "
        "tasks."
    )


class ReplyApproval(_OperatorBase):
    """What an operator needs to hold its reply for a person's approval.

    The operator calls :meth:`init_approval` in its ``__init__`` (so a mistake fails when the DAG
    is parsed) and returns :meth:`await_approval` of its result where it would return the result.
    """

    require_approval: bool = False
    approval_timeout: timedelta = DEFAULT_APPROVAL_TIMEOUT

    def init_approval(self, require_approval: bool, approval_timeout: timedelta | float) -> None:
        """Check and store the approval arguments (their meaning: :class:`O3MiniOperator`).

        :raises InvalidRequestError: approval on an Airflow without human-in-the-loop, or a timeout
            that is not a positive duration.
        """
        self.require_approval = require_approval
        self.approval_timeout = checked_approval_timeout(self.task_id, approval_timeout)
        if require_approval and (problem := approval_support_problem()):
            raise InvalidRequestError(f"{self.task_id}: {problem}")

    def await_approval(self, context: Context, reply: Any) -> Any:
        """Return ``reply``, or, with ``require_approval``, hold it for a person and return it later.

        Holding it writes the approval request and ends this run of the task; the task resumes in
        :meth:`approval_complete` with the reply and the person's answer.
        """
        if not self.require_approval:
            return reply
        from airflow.sdk import Param
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail
        from airflow.sdk.timezone import utcnow

        field = Param(
            reply_field_text(reply),
            type="string",
            format="multiline",
            title="Reply",
            description="What the downstream tasks receive when you approve; edit it to change it.",
        )
        # What the HITL request and its trigger both take: the options and the form.
        form: dict[str, Any] = {
            "ti_id": context["task_instance"].id,
            "options": OPTIONS,
            "defaults": [REJECT],
            "multiple": False,
            "params": {REPLY_FIELD: field.serialize()},
        }
        upsert_hitl_detail(
            subject=f"Approve o3-mini's reply of {self.dag_id}.{self.task_id}",
            body=approval_body(reply),
            **form,
        )
        self.log.info(
            "The reply waits for approval (Required Actions in Airflow's UI) for at most %s; "
            "without an answer it is rejected",
            self.approval_timeout,
        )
        # Without a worker slot; the reply travels with the wait.
        if airflow_version() >= (3, 3):
            from airflow.sdk.exceptions import TaskAwaitingInput

            raise TaskAwaitingInput(
                method_name=RESUME_METHOD, kwargs={"reply": reply}, timeout=self.approval_timeout
            )
        from airflow.providers.standard.triggers.hitl import HITLTrigger

        trigger = HITLTrigger(timeout_datetime=utcnow() + self.approval_timeout, **form)
        self.defer(trigger=trigger, method_name=RESUME_METHOD, kwargs={"reply": reply})

    def approval_complete(self, context: Context, reply: Any, event: dict[str, Any]) -> Any:
        """Resume with the person's answer: return the reply (as edited) or skip.

        :raises AirflowSkipException: rejected, or no answer in time.
        :raises AirflowFailException: the answer could not be read or the edited reply is not the
            JSON asked for. Final: the reply was paid for, and a retry would pay again.
        """
        if "error" in event:
            raise AirflowFailException(
                f"{self.task_id}: the approval of the reply failed ({event.get('error_type')}): "
                f"{event.get('error')}"
            )
        chosen = list(event.get("chosen_options") or [])
        user = event.get("responded_by_user")
        who = f"{user.get('name')} (id {user.get('id')})" if user and not event.get("timedout") else None
        if chosen != [APPROVE]:
            raise AirflowSkipException(
                f"The reply was {'rejected by ' + who if who else 'not approved in time, so rejected'}; "
                "the downstream tasks are skipped"
            )
        edited = (event.get("params_input") or {}).get(REPLY_FIELD)
        if edited is None or edited == reply_field_text(reply):
            self.log.info("The reply was approved by %s as it is", who)
            return reply
        self.log.info("The reply was approved by %s with their edit", who)
        return self._edited_reply(reply, edited)

    def _edited_reply(self, reply: Any, edited: Any) -> Any:
        """The reviewer's version: text for a text reply; for a JSON reply, the edit parsed (and
        checked against ``response_format`` when the operator has one)."""
        from airflow_o3.errors import StructuredOutputError

        if isinstance(reply, str):
            return str(edited)
        output_format = getattr(self, "output_format", None)
        try:
            if output_format is not None and output_format.is_json and not isinstance(reply, list):
                return output_format.parse(str(edited), "stop")
            return json.loads(str(edited))
        except (ValueError, StructuredOutputError) as error:
            raise AirflowFailException(
                f"{self.task_id}: the approved {REPLY_FIELD} field is not the JSON the task hands on: "
                f"{error}. The reply was paid for, so the task fails rather than asks again (with the "
                "response cache on, clearing the task puts the same reply up for approval for nothing)"
            ) from None

"""Branching on a reply: o3-mini chooses which downstream task(s) run; Airflow skips the others.

The model is asked with a strict schema whose ``choice`` is an enum of the branches, so the answer is
always one of them; a reply outside them fails the task (it is never guessed at). Like the operator,
this module is imported at every DAG parse and imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import XCOM_RETURN_KEY, AirflowFailException, BranchMixIn

from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators.o3mini import O3MiniOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

_NOT_FOR_A_CHOICE = ("n", "tools", "tool_choice")
"""Request parameters that would make the reply something other than one choice."""


@dataclass(frozen=True)
class Branch:
    """One option of a branching task: the task (or task group) it runs, and what it is for.

    :param task_id: a task or task group directly downstream of the branching task.
    :param description: what the branch is for, in words the model reads when it chooses.
    """

    task_id: str
    description: str | None = None


BranchChoices = Sequence[str] | Mapping[str, "str | Branch | Mapping[str, str]"]
"""The ``choices`` argument: task ids, or labels mapped to task ids or :class:`Branch` es."""


def branches(task_id: str | None, choices: Any) -> dict[str, Branch]:
    """``choices`` as labels mapped to branches, refused at DAG parse when it cannot be used.

    :raises InvalidRequestError: naming the task, what is wrong and the fix.
    """
    if isinstance(choices, str) or not isinstance(choices, Sequence | Mapping):
        raise InvalidRequestError(
            f"{task_id}: choices is {choices!r} (fix: a list of downstream task ids, or a dict of "
            'labels to task ids or Branch(task_id, description), e.g. {"billing": "handle_billing"})'
        )
    if not isinstance(choices, Mapping):
        choices = {str(choice): str(choice) for choice in choices}
    found = {str(label): _branch(task_id, label, value) for label, value in choices.items()}
    if len(found) < 2:
        raise InvalidRequestError(
            f"{task_id}: choices gives {len(found)} branch(es); a choice needs at least two "
            "(fix: add the other branches, or use O3MiniOperator without branching)"
        )
    return found


def _branch(task_id: str | None, label: Any, value: Any) -> Branch:
    if isinstance(value, Branch):
        return value
    if isinstance(value, str):
        return Branch(value)
    if isinstance(value, Mapping) and isinstance(value.get("task_id"), str):
        return Branch(value["task_id"], value.get("description"))
    raise InvalidRequestError(
        f"{task_id}: choices[{label!r}] is {value!r} (fix: a task id, Branch(task_id, description) or "
        '{"task_id": ..., "description": ...})'
    )


def choice_schema(options: Mapping[str, Branch], multiple: bool) -> dict[str, Any]:
    """The strict schema the model answers: the label(s) it chooses, from an enum, and a reason."""
    labels = list(options)
    described = [f"{label}: {branch.description}" for label, branch in options.items() if branch.description]
    choice: dict[str, Any] = {"type": "string", "enum": labels}
    if described:
        choice["description"] = "The options: " + "; ".join(described)
    if multiple:
        choice = {
            "type": "array",
            "items": choice,
            "minItems": 1,
            "description": "Every option that applies, at least one.",
        }
    return {
        "title": "BranchChoice",
        "type": "object",
        "properties": {
            "choice": choice,
            "reason": {"type": "string", "description": "One short sentence: why this branch fits."},
        },
    }


class O3MiniBranchOperator(O3MiniOperator, BranchMixIn):
    """Ask o3-mini which downstream task(s) should run; the others are skipped, as with ``@task.branch``.

    The prompt says what to decide (``"Which team should handle this ticket? ..."``); the operator
    adds the options as a strict JSON schema whose ``choice`` is an enum of them, so the answer is
    always one of the branches. The task's result (XCom ``return_value``) is ``{"choice": <label, or
    the list of labels>, "task_ids": [<the tasks that run>], "reason": <the model's short reason>}``,
    also written to the log; ``usage`` and ``completion`` are pushed as by :class:`O3MiniOperator`.

    Takes every argument of :class:`O3MiniOperator` except ``response_format`` and ``json_retries``
    (the operator sets the format; a strict enum needs no second asking), and:

    :param choices: the options. By default, every task directly downstream, by task id. A list of
        task ids limits them (other downstream tasks are skipped whatever the answer); a dict maps
        labels the model reads to task ids, or to ``Branch(task_id, description)`` /
        ``{"task_id": ..., "description": ...}`` when a label needs explaining. Task group ids work
        as task ids.
    :param multiple: let the model choose one or more branches instead of exactly one.
    """

    inherits_from_skipmixin = True
    ui_color = "#f5e6d6"

    def __init__(
        self,
        *,
        choices: BranchChoices | None = None,
        multiple: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        parameters = kwargs.get("parameters")
        refused = [name for name in ("response_format", "json_retries") if kwargs.get(name)]
        if isinstance(parameters, Mapping):
            refused += [f"parameters[{name!r}]" for name in _NOT_FOR_A_CHOICE if name in parameters]
        if refused:
            raise InvalidRequestError(
                f"{task_id}: {', '.join(refused)} cannot be given to a branching task: it asks for its "
                "own schema, an enum of the branches, and takes one answer (fix: drop it, or use "
                "O3MiniOperator and @task.branch)"
            )
        self.options = branches(task_id, choices) if choices is not None else None
        self.multiple = multiple
        super().__init__(**kwargs)

    def branch_options(self) -> dict[str, Branch]:
        """The options the model chooses from, each checked to be directly downstream.

        :raises AirflowFailException: an option is not downstream, or there is nothing to choose from.
        """
        downstream = set(self.downstream_task_ids)
        options = self.options or {task_id: Branch(task_id) for task_id in sorted(downstream)}
        groups = set(self.dag.task_group_dict) if self.dag is not None else set()
        stray = sorted(b.task_id for b in options.values() if b.task_id not in downstream | groups)
        if stray:
            raise AirflowFailException(
                f"{self.task_id}: choices name {stray}, which are not directly downstream of it "
                f"(downstream: {sorted(downstream)}) (fix: add `{self.task_id} >> {stray[0]}`, or "
                "correct the choices)"
            )
        if len(options) < 2:
            raise AirflowFailException(
                f"{self.task_id}: {len(options)} downstream task(s) to choose from "
                f"({sorted(downstream)}); a branch needs at least two (fix: set them downstream with "
                f"`{self.task_id} >> [a, b]`)"
            )
        return options

    def _ask_for_choice(self) -> dict[str, Branch]:
        """Set the request's format to the enum of the options, checked against the DAG."""
        from airflow_o3.structured import output_format

        options = self.branch_options()
        self.response_format = choice_schema(options, self.multiple)
        self.output_format = output_format(self.response_format)
        return options

    def execute(self, context: Context) -> Any:
        options = self._ask_for_choice()
        return self._branch(context, options, super().execute(context))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        options = self._ask_for_choice()
        return self._branch(context, options, super().execute_complete(context, event))

    def approval_complete(self, context: Context, reply: Any, event: dict[str, Any]) -> Any:
        """With ``require_approval``, branch on the choice the person approved (or edited)."""
        options = self._ask_for_choice()
        return self._branch(context, options, super().approval_complete(context, reply, event))

    def _branch(self, context: Context, options: Mapping[str, Branch], reply: Any) -> Any:
        """Skip the branches not chosen, log the choice and its reason, and return both (a task that
        only renders its request returns the request and skips nothing)."""
        if self.render_only:
            return reply
        chosen = reply["choice"] if isinstance(reply["choice"], list) else [reply["choice"]]
        labels = list(dict.fromkeys(chosen))
        task_ids = list(dict.fromkeys(options[label].task_id for label in labels))
        self.log.info("o3-mini chose %s: %s", ", ".join(labels), reply["reason"])
        result = {
            "choice": labels if self.multiple else labels[0],
            "task_ids": task_ids,
            "reason": reply["reason"],
        }
        # pushed here: on Airflow 3 skipping ends execute with an exception, so a return value is lost
        context["ti"].xcom_push(key=XCOM_RETURN_KEY, value=result)
        self.do_branch(context, task_ids)
        return result

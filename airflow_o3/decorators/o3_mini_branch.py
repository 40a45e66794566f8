"""``@task.o3_mini_branch``: a TaskFlow function returns the question, o3-mini chooses the branch.

::

    @task.o3_mini_branch(choices={"billing": "handle_billing", "bug": "handle_bug"})
    def route(ticket: dict) -> str:
        return f"Which team should handle this ticket? {ticket['text']}"

    route(load_ticket()) >> [handle_billing, handle_bug]

The function works as for ``@task.o3_mini`` (upstream values as arguments; it returns the prompt or
the messages, sent as data, never rendered); the decorator takes the arguments of
:class:`~airflow_o3.operators.branch.O3MiniBranchOperator` (``choices``, ``multiple``...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    DecoratedOperator,
    task_decorator_factory,
)

from airflow_o3.decorators.o3_mini import PromptFromFunction, refuse_prompt_arguments
from airflow_o3.operators.branch import O3MiniBranchOperator

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.providers.common.compat.sdk import Context, TaskDecorator


class O3MiniBranchDecoratedOperator(PromptFromFunction, DecoratedOperator, O3MiniBranchOperator):
    """The operator behind ``@task.o3_mini_branch``: :class:`O3MiniBranchOperator` whose prompt is
    the result of the decorated function.

    :param python_callable: the decorated function; it returns the prompt or the messages.
    :param op_args: its positional arguments (upstream outputs are resolved first).
    :param op_kwargs: its keyword arguments (upstream outputs are resolved first).
    """

    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        *O3MiniBranchOperator.template_fields,
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **O3MiniBranchOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.o3_mini_branch"
    overwrite_rtif_after_execution: bool = True

    __init__ = PromptFromFunction.init_decorated

    def execute(self, context: Context) -> Any:
        self.prompt_from_function(context)
        return super().execute(context)


def o3_mini_branch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Turn a function that returns a question into a task where o3-mini chooses the downstream
    task(s) that run (``@task.o3_mini_branch``); the others are skipped.

    :param python_callable: the function (given by Python when used as ``@task.o3_mini_branch``).
    """
    refuse_prompt_arguments("o3_mini_branch", kwargs)
    kwargs.setdefault("multiple_outputs", False)
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=O3MiniBranchDecoratedOperator,
        **kwargs,
    )

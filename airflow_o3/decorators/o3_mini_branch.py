"""``@task.o3_mini_branch``: a TaskFlow function returns the question, o3-mini chooses the branch.

Examples and the arguments: ``docs/taskflow.md`` and ``docs/branching.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_o3.decorators.o3_mini import O3MiniDecoratedOperator, decorator_of
from airflow_o3.operators.branch import O3MiniBranchOperator

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.common.compat.sdk import TaskDecorator


class O3MiniBranchDecoratedOperator(O3MiniDecoratedOperator, O3MiniBranchOperator):
    """The operator behind ``@task.o3_mini_branch``: :class:`O3MiniBranchOperator` whose prompt is
    the result of the decorated function (its arguments as for ``@task.o3_mini``)."""

    custom_operator_name: str = "@task.o3_mini_branch"


def o3_mini_branch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Turn a function that returns a question into a task where o3-mini chooses the downstream
    task(s) that run (``@task.o3_mini_branch``); the others are skipped.

    :param python_callable: the function (given by Python when used as ``@task.o3_mini_branch``).
    """
    return decorator_of(O3MiniBranchDecoratedOperator, python_callable, kwargs)

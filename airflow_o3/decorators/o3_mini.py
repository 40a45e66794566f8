"""``@task.o3_mini``: a TaskFlow function returns the prompt, o3-mini answers, the reply is its result.

Examples and the arguments: ``docs/taskflow.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    SET_DURING_EXECUTION,
    AirflowFailException,
    DecoratedOperator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)

from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators.o3mini import O3MiniOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, TaskDecorator

_SET_BY_THE_FUNCTION = ("prompt", "messages")
_DEVELOPER_ROLES = ("developer", "system")


class O3MiniDecoratedOperator(DecoratedOperator, O3MiniOperator):
    """The operator behind ``@task.o3_mini``: :class:`O3MiniOperator` whose prompt is the result of
    the decorated function, called when the task runs, after Airflow rendered the templates (so what
    it returns is never rendered).

    :param python_callable: the decorated function; it returns the prompt or the messages.
    :param op_args: its positional arguments (upstream outputs are resolved first).
    :param op_kwargs: its keyword arguments (upstream outputs are resolved first).
    """

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *O3MiniOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **O3MiniOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.o3_mini"
    overwrite_rtif_after_execution: bool = True  # the UI shows the prompt the function returned

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self.use_returned(self.python_callable(*self.op_args, **kwargs))
        return super().execute(context)

    def use_returned(self, value: Any) -> None:
        """Make ``value`` (the function's result) the prompt or the conversation of the request.

        A conversation gets ``system_prompt``, when one is given, as its first (developer) message.

        :raises AirflowFailException: ``value`` is neither a non-empty string nor a list of messages;
            nothing is sent, and a retry would not return anything else.
        """
        if isinstance(value, str) and value.strip():
            self.prompt = value
            return
        if isinstance(value, list) and value and all(_is_message(m) for m in value):
            self.prompt = None
            self.messages = self._with_system_prompt([dict(m) for m in value])
            return
        raise AirflowFailException(
            f"{self.task_id}: {self.custom_operator_name} function {self.python_callable.__name__}() "
            f"returned {_described(value)} (fix: return the prompt as a non-empty string, or the "
            'conversation as a list of {"role": ..., "content": ...} dicts)'
        )

    def _with_system_prompt(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.system_prompt is None:
            return messages
        if messages[0].get("role") in _DEVELOPER_ROLES:
            raise AirflowFailException(
                f"{self.task_id}: the returned messages start with a {messages[0]['role']} message and "
                "system_prompt is given too (fix: drop system_prompt from the decorator, or the first "
                "message from the list)"
            )
        system_prompt, self.system_prompt = self.system_prompt, None
        return [{"role": "developer", "content": system_prompt}, *messages]


def _is_message(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("role"), str) and "content" in value


def _described(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string"
    if isinstance(value, list):
        return "an empty list" if not value else "a list that is not all {'role', 'content'} dicts"
    return f"{type(value).__name__} {str(value)[:80]!r}"


def decorator_of(
    operator_class: type[O3MiniDecoratedOperator],
    python_callable: Callable[..., Any] | None,
    kwargs: dict[str, Any],
) -> TaskDecorator:
    """The TaskFlow decorator of ``operator_class``; ``prompt=`` / ``messages=`` are refused (the
    function makes the prompt).

    :raises InvalidRequestError: naming the argument and the fix.
    """
    given = [name for name in _SET_BY_THE_FUNCTION if name in kwargs]
    if given:
        raise InvalidRequestError(
            f"{operator_class.custom_operator_name}: {' and '.join(given)} is what the decorated "
            f"function returns (fix: drop {given[0]}= and return the prompt, or the list of messages, "
            "from the function)"
        )
    kwargs.setdefault("multiple_outputs", False)  # the function's annotation is the prompt's, not the reply's
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=operator_class,
        prompt=SET_DURING_EXECUTION,
        **kwargs,
    )


def o3_mini_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Turn a function that returns a prompt into a task that asks o3-mini (``@task.o3_mini``).

    The function receives upstream values as arguments and returns the prompt (a string) or the
    conversation (a list of ``{"role", "content"}`` dicts); the task's result is the reply. Every
    argument of :class:`~airflow_o3.operators.o3mini.O3MiniOperator` but ``prompt`` and ``messages``
    can be given: ``system_prompt``, ``reasoning_effort``, ``max_completion_tokens``,
    ``response_format``, ``cache``, ``deferrable``... Works with ``.partial()`` / ``.expand()``.

    :param python_callable: the function (given by Python when used as ``@task.o3_mini``).
    """
    return decorator_of(O3MiniDecoratedOperator, python_callable, kwargs)

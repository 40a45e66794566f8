"""The operator: render a prompt from upstream data, ask o3-mini, hand the reply to downstream tasks.

This module is imported at every DAG parse, so it imports nothing heavy: the hook, ``requests`` and
pydantic are loaded when the task runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_o3.errors import CompletionError, InvalidRequestError, O3Error
from airflow_o3.parameters import check_parameter_names

if TYPE_CHECKING:
    import jinja2
    from airflow.providers.common.compat.sdk import Context

    from airflow_o3.cache import CacheSettings, ResponseCache
    from airflow_o3.hooks.o3mini import O3MiniHook
    from airflow_o3.response import Completion
    from airflow_o3.retry import RetryPolicy

_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


def client_request_id(context: Context) -> str:
    """``X-Client-Request-Id`` for a task try: dag, task, run, map index and try, in the header's alphabet."""
    ti = context["ti"]
    parts = [ti.dag_id, ti.task_id, ti.run_id]
    if getattr(ti, "map_index", -1) >= 0:
        parts.append(f"m{ti.map_index}")
    parts.append(f"t{ti.try_number}")
    return _REQUEST_ID_UNSAFE.sub("_", ":".join(str(part) for part in parts))[-128:]


def check_completion(completion: Completion) -> None:
    """Refuse a reply that is not an answer, so an empty string never travels downstream.

    :raises CompletionError: the reasoning used the whole budget, the model refused, or the content
        filter stopped it; the message says what to change.
    """
    if completion.refusal:
        raise CompletionError(f"o3-mini refused to answer: {completion.refusal!r}. Rephrase the prompt.")
    if completion.finish_reason == "content_filter":
        raise CompletionError(
            "the service's content filter stopped the reply (finish_reason content_filter); "
            "review the prompt and the upstream data it includes"
        )
    if completion.finish_reason == "length" and not completion.text:
        reasoning = completion.usage.get("completion_tokens_details", {}).get("reasoning_tokens")
        raise CompletionError(
            f"the reply is empty: reasoning used the whole token budget ({reasoning} reasoning tokens, "
            "finish_reason length). Raise max_completion_tokens or lower reasoning_effort"
        )
    if not completion.text and not completion.tool_calls:
        raise CompletionError(
            f"the reply is empty (finish_reason {completion.finish_reason!r}); nothing to pass downstream"
        )


class O3MiniOperator(BaseOperator):
    """Ask o3-mini through the AI/ML API with a Jinja-templated prompt; return its reply.

    The reply text is the task's return value (XCom ``return_value``). The operator also pushes
    ``usage`` (the service's usage object: prompt, completion and reasoning tokens, plus ``usd_spent``
    and ``credits_used`` when the service reports its cost) and ``completion`` (id, model,
    finish_reason, created, request_id, from_cache).

    :param prompt: the user message: an inline Jinja template, or the path of a template file ending
        ``.j2``, ``.md`` or ``.txt`` (found through the DAG's folder and ``template_searchpath``).
        Pull upstream data with ``{{ ti.xcom_pull(task_ids="...") }}``, ``{{ params.x }}`` and macros;
        that data is sent as text, never rendered again.
    :param system_prompt: instructions sent before the prompt with the ``developer`` role (the o-series
        name for the system role); templated like ``prompt``.
    :param messages: instead of ``prompt``, a whole conversation as a list of ``{"role", "content"}``
        dicts; every content is templated.
    :param conn_id: the ``aimlapi`` connection holding the API key.
    :param model: the model to call; defaults to the connection's ``model`` extra, else ``o3-mini``.
    :param reasoning_effort: ``low``, ``medium`` (the service's default) or ``high``: more effort
        thinks longer and costs more reasoning tokens.
    :param max_completion_tokens: the most tokens the reply may use, hidden reasoning included (1 to
        100000). Too small a budget leaves no room for the visible answer, and the task fails.
    :param response_format: the contract's response format dict, e.g. ``{"type": "json_object"}``.
    :param parameters: any other contract parameter: ``tools``, ``tool_choice``, ``seed``, ``stop``,
        ``n``, ``provider``.
    :param retry: retry settings overriding the connection's, e.g. ``{"max_attempts": 3}``.
    :param timeout: seconds to wait for the reply, overriding the connection's read timeout.
    :param cache: the response cache: ``"off"`` (default), ``"on"``, ``"read_only"``, or a dict
        ``{"mode": "on", "path": "s3://bucket/o3-cache"}``. With it on, a retry of a task whose call
        already succeeded reuses the stored reply instead of paying again.
    """

    template_fields: Sequence[str] = ("prompt", "system_prompt", "messages", "model")
    template_ext: Sequence[str] = (".j2", ".md", ".txt")
    template_fields_renderers = {"prompt": "md", "system_prompt": "md", "messages": "json"}
    ui_color = "#d6f5e3"

    def __init__(
        self,
        *,
        prompt: str | None = None,
        system_prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        conn_id: str = "aimlapi_default",
        model: str | None = None,
        reasoning_effort: str | None = None,
        max_completion_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
        retry: RetryPolicy | dict[str, Any] | None = None,
        timeout: float | None = None,
        cache: CacheSettings | dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (prompt is None) == (messages is None):
            raise InvalidRequestError(
                f"{self.task_id}: pass either prompt or messages (fix: use prompt for one user message, "
                "messages for a whole conversation)"
            )
        if messages is not None and system_prompt is not None:
            raise InvalidRequestError(
                f"{self.task_id}: system_prompt goes with prompt (fix: put a developer message first in messages)"
            )
        check_parameter_names(parameters or {})
        for name in {"reasoning_effort", "max_completion_tokens", "response_format"} & set(parameters or {}):
            raise InvalidRequestError(f"{self.task_id}: pass {name} as its own argument, not in parameters")
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.messages = messages
        self.conn_id = conn_id
        self.model = model
        self.reasoning_effort = reasoning_effort
        self.max_completion_tokens = max_completion_tokens
        self.response_format = response_format
        self.parameters = parameters or {}
        self.retry = retry
        self.timeout = timeout
        self.cache = cache

    @cached_property
    def hook(self) -> O3MiniHook:
        """The hook that owns the connection and the HTTP call."""
        from airflow_o3.hooks.o3mini import O3MiniHook

        return O3MiniHook(conn_id=self.conn_id, retry=self.retry, timeout=self.timeout)

    def get_template_env(self, dag: Any = None) -> jinja2.Environment:
        """The DAG's environment; outside a DAG, a strict one, so an undefined variable always fails."""
        env = super().get_template_env(dag)
        if dag is None and not self.has_dag():
            import jinja2

            env.undefined = jinja2.StrictUndefined
        return env

    def build_messages(self) -> list[dict[str, Any]]:
        """The rendered conversation; an empty prompt is refused before anything is sent."""
        if self.messages is not None:
            messages = [dict(message) for message in self.messages]
        else:
            messages = []
            if self.system_prompt is not None:
                messages.append({"role": "developer", "content": self.system_prompt})
            messages.append({"role": "user", "content": self.prompt})
        for position, message in enumerate(messages):
            content = message.get("content")
            if isinstance(content, str) and not content.strip() and message.get("role") != "assistant":
                if self.messages is not None:
                    field = f"messages[{position}].content"
                else:
                    field = "system_prompt" if message["role"] == "developer" else "prompt"
                raise InvalidRequestError(
                    f"{self.task_id}: the rendered {field} is empty (fix: check the template and the "
                    "upstream values it pulls in)"
                )
        return messages

    def request_parameters(self) -> dict[str, Any]:
        """The contract parameters of the request, unset ones left out."""
        return {
            "reasoning_effort": self.reasoning_effort,
            "max_completion_tokens": self.max_completion_tokens,
            "response_format": self.response_format,
            **self.parameters,
        }

    def response_cache(self) -> ResponseCache | None:
        """The response cache, when it is on for this task."""
        from airflow_o3.cache import CacheSettings, ResponseCache

        settings = CacheSettings.coerce(self.cache)
        return ResponseCache(settings) if settings.mode != "off" else None

    def execute(self, context: Context) -> Any:
        with _task_failure_on_final_errors():
            completion = self.hook.chat(
                self.build_messages(),
                model=self.model,
                client_request_id=client_request_id(context),
                cache=self.response_cache(),
                **self.request_parameters(),
            )
        return self.publish(context, completion)

    def publish(self, context: Context, completion: Completion) -> Any:
        """Check the reply, log a summary, push ``usage`` and ``completion``, return the task's result."""
        with _task_failure_on_final_errors():
            check_completion(completion)
        self.log.info(
            "o3-mini reply: %s, %s tokens (%s reasoning), cost %s, request id %s%s",
            completion.finish_reason,
            completion.usage.get("total_tokens"),
            completion.usage.get("completion_tokens_details", {}).get("reasoning_tokens"),
            f"${completion.cost_usd:.6f}" if completion.cost_usd is not None else "not reported",
            completion.request_id,
            ", from the response cache" if completion.from_cache else "",
        )
        ti = context["ti"]
        ti.xcom_push(key="usage", value=completion.usage_record())
        ti.xcom_push(
            key="completion",
            value={
                "id": completion.id,
                "model": completion.model,
                "finish_reason": completion.finish_reason,
                "created": completion.created,
                "request_id": completion.request_id,
                "from_cache": completion.from_cache,
            },
        )
        return completion.text


@contextmanager
def _task_failure_on_final_errors() -> Iterator[None]:
    """Errors that a task retry cannot mend (bad input, a wrong key, no answer) fail without retries.

    Retryable service errors (429, 5xx, timeouts) that outlived the hook's own retries are raised as
    they are, so Airflow's task retries can try again later.
    """
    try:
        yield
    except O3Error as error:
        if error.retryable:
            raise
        raise AirflowFailException(str(error)) from error

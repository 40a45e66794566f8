"""The operator: render a prompt from upstream data, ask o3-mini, hand the reply to downstream tasks.

The request itself is an :class:`~airflow_o3.call.O3Call`; this module runs it in the worker or the
triggerer. Imported at every DAG parse: the hook, ``requests``, ``jsonschema`` and pydantic are loaded
when the task runs.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_o3.call import (
    REQUEST_FIELDS,
    O3Call,
    PromptOperator,
    check_arguments,
    client_request_id,
    connection_hook,
    reply_value,
    response_cache,
    take_renamed,
    task_failure_on_final_errors,
)
from airflow_o3.errors import CompletionError, InvalidRequestError, StructuredOutputError
from airflow_o3.operators.approval import DEFAULT_APPROVAL_TIMEOUT, ReplyApproval
from airflow_o3.operators.upstream import checked_inputs, render_with_inputs
from airflow_o3.structured import reask_messages

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import timedelta

    import jinja2
    from airflow.providers.common.compat.sdk import Context

    from airflow_o3.cache import CacheSettings
    from airflow_o3.hooks.o3mini import O3MiniHook
    from airflow_o3.lineage import O3Lineage
    from airflow_o3.response import Completion
    from airflow_o3.retry import RequestRetry
    from airflow_o3.structured import OutputFormat

__all__ = ["O3MiniOperator", "check_arguments", "client_request_id", "reply_value"]

COMPLETION_XCOM = ("id", "model", "finish_reason", "created", "request_id", "from_cache", "conn_id")
"""The fields of the reply pushed as the ``completion`` XCom."""


class O3MiniOperator(PromptOperator, ReplyApproval, BaseOperator):
    """Ask o3-mini through the AI/ML API with a Jinja-templated prompt; return its reply.

    The reply is the task's return value (XCom ``return_value``): the text; with ``response_format``
    the parsed JSON (plain dicts and lists); when the model calls tools, the list of calls as
    ``{"id", "name", "arguments"}`` with the arguments parsed; with ``n`` > 1 in ``parameters``, a
    list of those, one per choice. The operator also pushes ``usage`` (the service's usage object:
    prompt, completion and reasoning tokens, plus ``usd_spent`` and ``credits_used`` when the service
    reports its cost, added up over every billed request of the task, and ``attempts``, how many
    there were) and ``completion`` (id, model, finish_reason, created, request_id, from_cache).

    :param prompt: the user message: an inline Jinja template, or the path of a template file ending
        ``.j2``, ``.jinja``, ``.jinja2``, ``.md`` or ``.txt`` (found through the DAG's folder and
        ``template_searchpath``). A path is one word, and the file must exist when the DAG is parsed;
        text with a space is the prompt itself, even when it ends in ``.md``.
        Pull upstream data with ``{{ ti.xcom_pull(task_ids="...") }}``, ``{{ params.x }}`` and macros;
        that data is sent as text, never rendered again.
    :param system_prompt: instructions sent before the prompt with the ``developer`` role (the o-series
        name for the system role); templated like ``prompt``.
    :param messages: instead of ``prompt``, a whole conversation as a list of ``{"role", "content"}``
        dicts; every content is templated.
    :param inputs: upstream outputs by name, e.g. ``{"rows": load_rows()}``, usable in the templates as
        ``{{ inputs.rows }}``; Airflow makes those tasks upstream of this one, and their values are data
        (never rendered). A template that pulls ``ti.xcom_pull(task_ids="x")`` from a task that is not
        upstream fails before anything is sent, naming the missing ``x >> task``.
    :param conn_id: the ``aimlapi`` connection holding the API key.
    :param model: the model to call; defaults to the connection's ``model`` extra, else ``o3-mini``.
    :param reasoning_effort: ``low``, ``medium`` (the service's default) or ``high``: more effort
        thinks longer and costs more reasoning tokens.
    :param max_completion_tokens: the most tokens the reply may use, hidden reasoning included (1 to
        100000). Too small a budget leaves no room for the visible answer, and the task fails.
    :param response_format: the shape of the reply: a JSON Schema dict of an object, a pydantic model
        class, or ``"json_object"`` (any JSON object; say "JSON" in the prompt). A schema is sent in
        strict form (every object closed, every property required: make an optional field nullable)
        and the reply is validated against it; a reply that is not valid JSON, is cut off or does not
        match fails the task with the problem and the start of the reply. The contract's own
        ``{"type": ...}`` dicts are accepted too.
    :param json_retries: with ``response_format``, how many times to ask again, telling the model what
        was wrong, before failing on a reply that is not the JSON asked for. Every request is billed,
        and counted in ``usage``.
    :param stream: receive the reply as it is written and log it line by line, so a long reply shows
        progress in the task log. The result is the same as without streaming; a stream that breaks
        off fails the task (Airflow's retries may try again), it never passes on half a reply.
    :param render_only: render the prompt, build and check the exact request body, log it and return it
        (XCom ``return_value``) without sending anything, so nothing is paid.
    :param parameters: any other contract parameter: ``tools`` and ``tool_choice`` (the model's tool
        calls become the result), ``n`` (several answers, returned as a list), ``seed``, ``stop``,
        ``provider``.
    :param request_retry: the HTTP retry settings overriding the connection's, a
        :class:`~airflow_o3.retry.RequestRetry` or a dict, e.g. ``{"max_attempts": 3}`` (was ``retry=``).
    :param read_timeout: seconds to wait for the reply, overriding the connection's read timeout (was
        ``timeout=``).
    :param fallback_conn_ids: connections to ask, in order, when ``conn_id`` cannot answer: its key is
        refused (401) or out of credits (403), or it still fails after its retries (429, 5xx, timeouts).
        Each uses its own key, base URL and default model; ``completion`` names the one that answered.
        A bad request (400) is not sent again elsewhere.
    :param cache: the response cache: ``"off"`` (default), ``"on"``, ``"read_only"``, or a dict
        ``{"mode": "on", "path": "s3://bucket/o3-cache", "grace_period": 15}``. With it on, a retry
        of a task whose call already succeeded reuses the stored reply instead of paying again.
    :param deferrable: wait for the reply in the triggerer rather than in a worker slot (a reasoning
        call can take minutes). The worker renders and checks the request, then defers; the
        trigger answers from the cache when it can, and stores the reply as it arrives. The result,
        the XComs and the errors are those of a call made in the worker. Default: ``[operators]
        default_deferrable``. Not with ``stream`` or ``json_retries``, which need the worker:
        ``deferrable=True`` with them fails at parse, and with only the config default such a task
        runs in the worker, saying so in its log.
    :param require_approval: hold the reply until a person approves, edits or rejects it in Airflow's
        UI (Browse > Required Actions) before downstream tasks see it; rejected, the task is skipped
        and so are the downstream tasks. The reply is paid once. Airflow 3.1 and later (refused when
        the DAG is parsed on older Airflow).
    :param approval_timeout: how long to wait for the person (a timedelta or seconds; default 24
        hours). With no answer by then the reply is rejected.
    """

    template_fields: Sequence[str] = ("inputs", "prompt", "system_prompt", "messages", "model")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **PromptOperator.template_fields_renderers,
        "inputs": "json",
    }
    ui_color = "#d6f5e3"
    _published: dict[str, Any] | None = None  # what execute published, for OpenLineage

    def __init__(
        self,
        *,
        prompt: str | None = None,
        system_prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        inputs: Mapping[str, Any] | None = None,
        conn_id: str = "aimlapi_default",
        model: str | None = None,
        reasoning_effort: str | None = None,
        max_completion_tokens: int | None = None,
        response_format: dict[str, Any] | type | str | None = None,
        json_retries: int = 0,
        stream: bool = False,
        render_only: bool = False,
        parameters: dict[str, Any] | None = None,
        request_retry: RequestRetry | dict[str, Any] | None = None,
        read_timeout: float | None = None,
        fallback_conn_ids: Sequence[str] = (),
        cache: CacheSettings | dict[str, Any] | str | bool | None = None,
        deferrable: bool | None = None,
        require_approval: bool = False,
        approval_timeout: timedelta | float = DEFAULT_APPROVAL_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        renamed = take_renamed(kwargs, type(self).__name__)
        call = O3Call.from_arguments(locals(), kwargs)
        super().__init__(**kwargs)
        self.worker_reason = self._check_worker_needs(call.output, stream, json_retries, deferrable)
        self.inputs = checked_inputs(self.task_id, inputs)
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.messages = messages
        self.conn_id = conn_id
        self.model = model
        self.reasoning_effort = reasoning_effort
        self.max_completion_tokens = max_completion_tokens
        self.response_format = response_format
        self.output_format = call.output
        self.json_retries = json_retries
        self.stream = stream
        self.parameters = call.parameters
        self.render_only = renamed.get("render_only", render_only)
        self.request_retry = renamed.get("request_retry", request_retry)
        self.read_timeout = renamed.get("read_timeout", read_timeout)
        self.fallback_conn_ids = tuple(fallback_conn_ids)
        self.cache = cache
        self.deferrable = (
            self._default_deferrable() if deferrable is None and not self.worker_reason else bool(deferrable)
        )
        self.init_approval(require_approval, approval_timeout)

    def _default_deferrable(self) -> bool:
        return bool(conf.getboolean("operators", "default_deferrable", fallback=False))

    def _check_worker_needs(
        self, output: OutputFormat | None, stream: bool, json_retries: int, deferrable: bool | None
    ) -> str | None:
        """Refuse what cannot run as asked; say why a task the config would defer runs in the worker."""
        if type(json_retries) is not int or json_retries < 0:
            raise InvalidRequestError(
                f"{self.task_id}: json_retries is {json_retries!r} (fix: use a whole number, 0 or more)"
            )
        if json_retries and (output is None or not output.is_json):
            raise InvalidRequestError(
                f"{self.task_id}: json_retries re-asks for a JSON reply (fix: set response_format to a "
                "schema or 'json_object', or drop json_retries)"
            )
        needs_worker = "stream" if stream else "json_retries" if json_retries else None
        if needs_worker and deferrable:
            raise InvalidRequestError(
                f"{self.task_id}: {needs_worker} needs the worker, and deferrable=True waits in the "
                "triggerer (fix: pass deferrable=False, or drop it)"
            )
        if needs_worker and deferrable is None and self._default_deferrable():
            return (
                f"Runs in the worker, not deferred as [operators] default_deferrable asks: "
                f"{needs_worker} needs the worker"
            )
        return None

    @cached_property
    def hook(self) -> O3MiniHook:
        """The hook that owns the connection and the HTTP call."""
        return connection_hook(self)

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        """Airflow's rendering with the prompt rules (:meth:`PromptOperator.render_template`), after
        the task's ``xcom_pull`` calls are checked and ``inputs`` resolved into the context."""
        render = super().render_template
        return render_with_inputs(self, render, content, context, jinja_env, seen_oids)

    def request(self) -> O3Call:
        """The call as the operator's fields are now: the template fields rendered when the task runs,
        and whatever a subclass's ``execute`` set (``prompt``, ``messages``, ``parameters``, ...) before
        calling this one's, ``output_format`` included)."""
        fields = {name: getattr(self, name) for name in REQUEST_FIELDS}
        return O3Call(output=self.output_format, **fields)

    def execute(self, context: Context) -> Any:
        """Render and check the request, then send it (or defer, or only render it); return the reply."""
        if self.worker_reason:
            self.log.info("%s", self.worker_reason)
        call = self.request()
        with task_failure_on_final_errors():
            messages = call.conversation()
            if self.render_only:
                return self.render_request(call, messages)
            if self.deferrable:
                return self.defer_call(context, call, messages)
            completions = self.ask(context, call, messages)
        return self.await_approval(
            context, self.publish(context, call, completions[-1], completions[:-1], messages)
        )

    def ask(self, context: Context, call: O3Call, messages: list[dict[str, Any]]) -> list[Completion]:
        """Send the request, and ask again (up to ``json_retries`` times) while the JSON is unusable.

        :return: every reply received, the last one to be published.
        """
        from airflow_o3.streaming import LineLog

        request_id = client_request_id(context)
        completions: list[Completion] = []
        while True:
            reply_log = LineLog(
                lambda index, line: self.log.info("reply%s | %s", f"[{index}]" * (call.choices > 1), line)
            )
            attempt_id = f"{request_id}:r{len(completions)}"[-128:] if completions else request_id
            try:
                completion = self.hook.send(
                    call.prepare(self.hook, messages, attempt_id),
                    cache=response_cache(self.cache),
                    on_text=reply_log.add if call.stream else None,
                )
            finally:
                reply_log.close()
            completions.append(completion)
            problem = _unusable_json(completion, call)
            if problem is None or len(completions) > self.json_retries:
                return completions
            reply, error = problem
            self.log.warning(
                "Reply %d of at most %d is not the JSON asked for, asking again: %s",
                len(completions),
                self.json_retries + 1,
                error,
            )
            messages = [*messages, *reask_messages(reply, error)]

    def defer_call(self, context: Context, call: O3Call, messages: list[dict[str, Any]]) -> Any:
        """Hand the checked request to the triggerer and free the worker slot. The trigger gets no
        secret: the conn_id, the cache settings and the request's cache entry (a digest), which comes
        back in its event."""
        from dataclasses import asdict

        from airflow_o3.cache import CacheSettings
        from airflow_o3.retry import RequestRetry
        from airflow_o3.triggers.o3mini import O3MiniTrigger

        prepared = call.prepare(self.hook, messages, client_request_id(context))
        cache = CacheSettings.coerce(self.cache)
        retry = (
            asdict(self.request_retry) if isinstance(self.request_retry, RequestRetry) else self.request_retry
        )
        self.defer(
            trigger=O3MiniTrigger(
                conn_id=self.conn_id,
                body=prepared.body,
                client_request_id=prepared.client_request_id,
                request_retry=retry,
                read_timeout=self.read_timeout,
                fallback_conn_ids=self.fallback_conn_ids,
                cache=asdict(cache) if cache.mode != "off" else None,
                cache_key=self.hook.cache_key(prepared) if cache.mode != "off" else None,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the triggerer's call: publish its reply, or raise the error it met (the same
        typed error, with the same message, as a call made in the worker). Nothing is rebuilt: the
        trigger has already read or written the response cache, and its event names the entry."""
        from airflow_o3.triggers.o3mini import completion_from_event

        with task_failure_on_final_errors():
            completion = completion_from_event(event)
        if completion.from_cache:
            self.log.info(
                "The triggerer read the reply from the response cache (entry %s): nothing was paid for it",
                str(event.get("cache_key"))[:16],
            )
        return self.await_approval(context, self.publish(context, self.request(), completion))

    def render_request(self, call: O3Call, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Build and check the exact request body, log it and return it; nothing is sent.

        The model and URL come from the connection when it can be read; without one, the defaults.
        """
        from airflow.providers.common.compat.sdk import AirflowNotFoundException

        from airflow_o3.settings import DEFAULT_BASE_URL, DEFAULT_MODEL

        try:
            model, url = self.hook.settings.model, self.hook.settings.chat_url
        except (AirflowNotFoundException, InvalidRequestError) as error:
            model, url = DEFAULT_MODEL, f"{DEFAULT_BASE_URL}/chat/completions"
            self.log.info("Render only: connection %r not read (%s); assuming %s", self.conn_id, error, url)
        body = call.body(model, messages)
        self.log.info(
            "Render only, nothing sent. The request would be POST %s with this body:\n%s",
            url,
            json.dumps(body, indent=2, ensure_ascii=False),
        )
        return body

    def publish(
        self,
        context: Context,
        call: O3Call,
        completion: Completion,
        earlier: Sequence[Completion] = (),
        messages: list[dict[str, Any]] | None = None,
    ) -> Any:
        """Check the reply, push ``usage`` (over the ``earlier`` replies of ``json_retries`` too, all
        billed) and ``completion``; return the task's result. Nothing is pushed for a reply that is
        no answer.

        :param messages: the conversation sent, for OpenLineage (``None``: rendered again if asked).
        """
        from airflow_o3.response import usage_over

        with task_failure_on_final_errors():
            value = call.result(completion)
        usage = usage_over([*earlier, completion])
        context["ti"].xcom_push(key="usage", value=usage)
        context["ti"].xcom_push(
            key="completion", value={name: getattr(completion, name) for name in COMPLETION_XCOM}
        )
        # the per-call summary line (tokens, cost, latency, ids) is logged by the hook's send()
        if earlier:
            self.log.info(
                "Over %d attempts: %s tokens, cost %s",
                usage["attempts"],
                usage.get("total_tokens"),
                f"${usage['usd_spent']:.6f}" if "usd_spent" in usage else "not reported",
            )
        self._published = {
            "model": completion.model,
            "usage": usage,
            "from_cache": completion.from_cache,
            "messages": messages,
        }
        return value

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> O3Lineage:
        """The OpenLineage provider's hook: a run facet with the model, a sha256 of the rendered
        messages, the token usage and the cost (see :mod:`airflow_o3.lineage`). Called only when the
        provider is installed; nothing of OpenLineage is imported before."""
        from airflow_o3.lineage import operator_lineage

        published = self._published  # None with render only: nothing was asked, nothing paid
        if published is not None and published["messages"] is None:
            published = {**published, "messages": self.request().conversation()}
        return operator_lineage(published)


def _unusable_json(completion: Completion, call: O3Call) -> tuple[str | None, StructuredOutputError] | None:
    """The first choice whose reply is not the JSON asked for (its text and why), if any.

    Other failures (a refusal, a content filter, bad tool arguments) are not worth asking again for.
    """
    for choice in completion.choices:
        try:
            reply_value(choice, completion, call.output)
        except StructuredOutputError as error:
            return choice.text, error
        except CompletionError:
            return None
    return None

"""The operator: render a prompt from upstream data, ask o3-mini, hand the reply to downstream tasks.

This module is imported at every DAG parse, so it imports nothing heavy: the hook, ``requests``,
``jsonschema`` and pydantic are loaded when the task runs.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator, conf

from airflow_o3.errors import (
    CompletionError,
    InvalidRequestError,
    O3Error,
    RefusalError,
    StreamCutError,
    StructuredOutputError,
)
from airflow_o3.parameters import (
    CONTRACT_PARAMETERS,
    OWN_PARAMETERS,
    REJECTED_PARAMETERS,
    parameter_name_problem,
    parameter_value_problems,
)
from airflow_o3.structured import OutputFormat, output_format, parse_tool_calls, reask_messages

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    import jinja2
    from airflow.providers.common.compat.sdk import Context

    from airflow_o3.cache import CacheSettings, ResponseCache
    from airflow_o3.hooks.o3mini import O3MiniHook
    from airflow_o3.lineage import O3Lineage
    from airflow_o3.response import Choice, Completion
    from airflow_o3.retry import RetryPolicy

_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")
_JINJA_MARKERS = ("{{", "{%")
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")


def client_request_id(context: Context) -> str:
    """``X-Client-Request-Id`` for a task try: dag, task, run, map index and try, in the header's alphabet."""
    ti = context["ti"]
    parts = [ti.dag_id, ti.task_id, ti.run_id]
    if getattr(ti, "map_index", -1) >= 0:
        parts.append(f"m{ti.map_index}")
    parts.append(f"t{ti.try_number}")
    return _REQUEST_ID_UNSAFE.sub("_", ":".join(str(part) for part in parts))[-128:]


def is_literal(value: Any) -> bool:
    """Whether a value is written out in the DAG file, so it can be checked when the DAG is parsed.

    A Jinja template (a string holding ``{{`` or ``{%``) or an upstream output (an ``XComArg``) is
    known only when the task runs, and is checked then.
    """
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, str):
        return not any(marker in value for marker in _JINJA_MARKERS)
    if isinstance(value, list | tuple):
        return all(is_literal(item) for item in value)
    if isinstance(value, dict):
        return all(is_literal(item) for item in value.values())
    return False


def _argument_name_problem(name: str) -> str | None:
    """What is wrong with a request parameter given as an argument of the operator, if it is one."""
    if name in REJECTED_PARAMETERS:
        return parameter_name_problem(name)
    if name in CONTRACT_PARAMETERS and name not in OWN_PARAMETERS:
        return f"{name} is a request parameter, not an argument (fix: parameters={{{name!r}: ...}})"
    return None


def _parameters_problems(parameters: Mapping[str, Any]) -> list[str]:
    problems = [problem for name in parameters if (problem := parameter_name_problem(name))]
    problems += [
        f"pass {name} as its own argument, not in parameters" for name in OWN_PARAMETERS if name in parameters
    ]
    literal = {name: value for name, value in parameters.items() if is_literal(value)}
    return problems + parameter_value_problems(literal, "parameters[{name!r}]")


def check_arguments(task_id: str | None, arguments: Mapping[str, Any]) -> None:
    """Refuse, when the DAG is parsed, the request arguments the service would refuse.

    Checked: request parameters given as operator arguments (``max_tokens=``, ``temperature=``,
    ``seed=``); ``parameters`` that o3-mini refuses or the contract does not know; the values of
    ``reasoning_effort``, ``max_completion_tokens`` and ``parameters`` written out in the DAG file
    (templates and upstream outputs are checked when the task runs).

    :param task_id: the task, named in the message.
    :param arguments: the operator's keyword arguments as the DAG file gives them.
    :raises InvalidRequestError: naming the task, each wrong argument and its fix.
    """
    problems = [problem for name in arguments if (problem := _argument_name_problem(name))]
    own = {name: arguments.get(name) for name in ("reasoning_effort", "max_completion_tokens")}
    problems += parameter_value_problems({name: value for name, value in own.items() if is_literal(value)})
    parameters = arguments.get("parameters")
    if isinstance(parameters, dict):
        problems += _parameters_problems(parameters)
    if problems:
        raise InvalidRequestError(f"{task_id}: " + "; ".join(problems))


def names_template_file(text: str, template_ext: Sequence[str]) -> bool:
    """Whether a prompt is the path of a template file rather than the prompt itself.

    It is when it is one word (no space or line break, no Jinja) ending in a template extension;
    ``"Summarise the changes in CHANGELOG.md"`` is inline text.
    """
    return _is_one_word(text) and text.endswith(tuple(template_ext))


def _is_one_word(text: str) -> bool:
    return bool(text) and not any(c.isspace() for c in text) and not any(m in text for m in _JINJA_MARKERS)


def _looks_like_other_file(text: str, template_ext: Sequence[str]) -> bool:
    """A one-word prompt that looks like the path of a file that is no template (``prompts/ask.tpl``).

    Message contents are not judged so: a few-shot assistant answer may well be ``report.pdf``.
    """
    if not _is_one_word(text) or text.endswith(tuple(template_ext)) or "://" in text:
        return False
    return "/" in text or _FILE_SUFFIX.search(text) is not None


def template_source(env: jinja2.Environment, name: str, where: str) -> str:
    """The text of the template file ``name``, found the way Airflow finds it (the DAG's folder, then
    ``template_searchpath``).

    :param where: the task and field, for the message.
    :raises InvalidRequestError: the file is not there, listing where it was looked for.
    """
    import jinja2

    folders = [str(folder) for folder in getattr(env.loader, "searchpath", [])]
    try:
        if env.loader is None:
            raise jinja2.TemplateNotFound(name)
        return env.loader.get_source(env, name)[0]
    except jinja2.TemplateNotFound:
        looked = ", ".join(folders) if folders else "nowhere: the operator is in no DAG"
        raise InvalidRequestError(
            f"{where} names the template file {name!r}, which is not there (looked in: {looked}). "
            "Fix: create it, give its path relative to the DAG's folder or a template_searchpath "
            "folder, or write the prompt inline"
        ) from None


def _check_choice(choice: Choice, completion: Completion) -> None:
    """Refuse a choice that is not an answer, so an empty string never travels downstream.

    :raises CompletionError: the reasoning used the whole budget, the model refused, or the content
        filter stopped it; the message says what to change.
    """
    if choice.refusal:
        raise CompletionError(f"o3-mini refused to answer: {choice.refusal!r}. Rephrase the prompt.")
    if choice.finish_reason == "content_filter":
        raise CompletionError(
            "the service's content filter stopped the reply (finish_reason content_filter); "
            "review the prompt and the upstream data it includes"
        )
    if choice.finish_reason == "length" and not choice.text and not choice.tool_calls:
        reasoning = (completion.usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        raise CompletionError(
            f"the reply is empty: reasoning used the whole token budget ({reasoning} reasoning tokens, "
            "finish_reason length). Raise max_completion_tokens or lower reasoning_effort"
        )
    if not choice.text and not choice.tool_calls:
        raise CompletionError(
            f"the reply is empty (finish_reason {choice.finish_reason!r}); nothing to pass downstream"
        )


def reply_value(choice: Choice, completion: Completion, output: OutputFormat | None) -> Any:
    """What one choice hands downstream: its tool calls, its parsed JSON, or its text.

    :raises CompletionError: the choice is no answer (see :func:`_check_choice`); a refusal of
        structured output is a :class:`RefusalError`, arguments that are not JSON a ``ToolCallError``,
        a reply that is not the JSON asked for a ``StructuredOutputError``.
    """
    if choice.refusal and output is not None and output.is_json:
        raise RefusalError(
            f"o3-mini refused to give the structured output ({output.kind}): {choice.refusal!r}. "
            "Asking again does not help; rephrase the prompt or review the upstream data it includes"
        )
    _check_choice(choice, completion)
    if choice.tool_calls:
        return parse_tool_calls(choice.tool_calls)
    if output is not None:
        return output.parse(choice.text, choice.finish_reason)
    return choice.text


class O3MiniOperator(BaseOperator):
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
    :param dry_run: render the prompt, build and check the exact request body, log it and return it
        (XCom ``return_value``) without sending anything, so nothing is paid.
    :param parameters: any other contract parameter: ``tools`` and ``tool_choice`` (the model's tool
        calls become the result), ``n`` (several answers, returned as a list), ``seed``, ``stop``,
        ``provider``.
    :param retry: retry settings overriding the connection's, e.g. ``{"max_attempts": 3}``.
    :param timeout: seconds to wait for the reply, overriding the connection's read timeout.
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
    """

    template_fields: Sequence[str] = ("prompt", "system_prompt", "messages", "model")
    template_ext: Sequence[str] = (".j2", ".jinja", ".jinja2", ".md", ".txt")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "prompt": "md",
        "system_prompt": "md",
        "messages": "json",
    }
    ui_color = "#d6f5e3"
    _published: dict[str, Any] | None = None  # what publish() reported, for OpenLineage

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
        response_format: dict[str, Any] | type | str | None = None,
        json_retries: int = 0,
        stream: bool = False,
        dry_run: bool = False,
        parameters: dict[str, Any] | None = None,
        retry: RetryPolicy | dict[str, Any] | None = None,
        timeout: float | None = None,
        cache: CacheSettings | dict[str, Any] | str | bool | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        check_arguments(
            kwargs.get("task_id"),
            {
                **kwargs,
                "reasoning_effort": reasoning_effort,
                "max_completion_tokens": max_completion_tokens,
                "parameters": parameters,
            },
        )
        super().__init__(**kwargs)
        self.worker_reason: str | None = None
        needs_worker = "stream" if stream else "json_retries" if json_retries else None
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
            if deferrable and needs_worker:
                deferrable = False
                self.worker_reason = (
                    f"Runs in the worker, not deferred as [operators] default_deferrable asks: "
                    f"{needs_worker} needs the worker"
                )
        if deferrable and needs_worker:
            raise InvalidRequestError(
                f"{self.task_id}: {needs_worker} needs the worker, and deferrable=True waits in the "
                "triggerer (fix: pass deferrable=False, or drop it)"
            )
        if (prompt is None) == (messages is None):
            raise InvalidRequestError(
                f"{self.task_id}: pass either prompt or messages (fix: use prompt for one user message, "
                "messages for a whole conversation)"
            )
        if messages is not None and system_prompt is not None:
            raise InvalidRequestError(
                f"{self.task_id}: system_prompt goes with prompt "
                "(fix: put a developer message first in messages)"
            )
        for field, text in (("prompt", prompt), ("system_prompt", system_prompt)):
            if isinstance(text, str) and _looks_like_other_file(text, self.template_ext):
                raise InvalidRequestError(
                    f"{self.task_id}: {field} {text!r} looks like the path of a file, but only files ending "
                    f"{', '.join(self.template_ext)} are read as templates, so it would be sent as it is "
                    "(fix: rename the file to one of those extensions, or write the prompt inline)"
                )
        try:
            self.output_format = output_format(response_format)
        except InvalidRequestError as error:
            raise InvalidRequestError(f"{self.task_id}: {error}") from None
        if type(json_retries) is not int or json_retries < 0:
            raise InvalidRequestError(
                f"{self.task_id}: json_retries is {json_retries!r} (fix: use a whole number, 0 or more)"
            )
        if json_retries and (self.output_format is None or not self.output_format.is_json):
            raise InvalidRequestError(
                f"{self.task_id}: json_retries re-asks for a JSON reply (fix: set response_format to a "
                "schema or 'json_object', or drop json_retries)"
            )
        self.prompt = prompt
        self.system_prompt = system_prompt
        self.messages = messages
        self.conn_id = conn_id
        self.model = model
        self.reasoning_effort = reasoning_effort
        self.max_completion_tokens = max_completion_tokens
        self.response_format = response_format
        self.json_retries = json_retries
        self.stream = stream
        # not self.dry_run: that is BaseOperator.dry_run(), which `airflow tasks test --dry-run` calls
        self.dry_run_only = dry_run
        self.parameters = parameters or {}
        self.retry = retry
        self.timeout = timeout
        self.cache = cache
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> O3MiniHook:
        """The hook that owns the connection and the HTTP call."""
        from airflow_o3.hooks.o3mini import O3MiniHook

        return O3MiniHook(conn_id=self.conn_id, retry=self.retry, timeout=self.timeout)

    def get_template_env(self, dag: Any = None) -> jinja2.Environment:
        """The DAG's environment; outside a DAG, a strict one, so an undefined variable always fails."""
        env = super().get_template_env(dag)
        if dag is None and not self.has_dag():  # type: ignore[no-untyped-call]  # not annotated in Airflow
            import jinja2

            env.undefined = jinja2.StrictUndefined
        return env

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Airflow's ``partial`` for dynamic task mapping, with the operator's checks of the arguments
        given there, so a mistake fails at DAG parse as it does without mapping."""
        check_arguments(kwargs.get("task_id"), kwargs)
        return super().partial(**kwargs)

    def resolve_template_files(self) -> None:
        """Read the prompt template files, when the DAG is parsed.

        A ``prompt``, ``system_prompt`` or message content is a file's path when it is one word (no
        space, no line break, no Jinja) ending in one of ``template_ext``; the file must exist, next
        to the DAG or in a ``template_searchpath`` folder. Any other text is the prompt itself, even
        when it ends in ``.md``. Other template fields (``model``, a batch's ``items``) are never
        read as files.

        :raises InvalidRequestError: a named file is not there, listing the folders looked in.
        """
        env = self.get_template_env()
        for field in ("prompt", "system_prompt"):
            value = getattr(self, field, None)
            if isinstance(value, str) and names_template_file(value, self.template_ext):
                setattr(self, field, template_source(env, value, f"{self.task_id}: {field}"))
        if isinstance(self.messages, list):
            self.messages = [
                self._resolved_message(env, position, m) for position, m in enumerate(self.messages)
            ]
        self.prepare_template()

    def _resolved_message(self, env: jinja2.Environment, position: int, message: Any) -> Any:
        content = message.get("content") if isinstance(message, dict) else None
        if not (isinstance(content, str) and names_template_file(content, self.template_ext)):
            return message
        where = f"{self.task_id}: messages[{position}].content"
        return {**message, "content": template_source(env, content, where)}

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        """Airflow's rendering, with the operator's rule for file names (see
        :meth:`resolve_template_files`): text that ends in a template extension but is not one word
        is rendered as inline text, and a missing file fails naming where it was looked for."""
        if isinstance(content, str) and content.endswith(tuple(self.template_ext)):
            jinja_env = jinja_env or self.get_template_env()
            if not names_template_file(content, self.template_ext):
                return self._render(jinja_env.from_string(content), context)
            template_source(jinja_env, content, f"{self.task_id}: a template field")
        return super().render_template(content, context, jinja_env, seen_oids)

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
            "response_format": dict(self.output_format.response_format) if self.output_format else None,
            "stream": True if self.stream else None,
            **self.parameters,
        }

    def response_cache(self) -> ResponseCache | None:
        """The response cache, when it is on for this task."""
        from airflow_o3.cache import CacheSettings, ResponseCache

        settings = CacheSettings.coerce(self.cache)
        return ResponseCache(settings) if settings.mode != "off" else None

    def execute(self, context: Context) -> Any:
        if self.worker_reason:
            self.log.info("%s", self.worker_reason)
        with _task_failure_on_final_errors():
            messages = self.build_messages()
            parameters = self.request_parameters()
            if self.output_format is not None:
                self.output_format.check(messages)
            if self.dry_run_only:
                return self.dry_run_request(messages, parameters)
            if self.deferrable:
                return self.defer_call(context, messages, parameters)
            completions = self.ask(context, messages, parameters)
        return self.publish(context, completions[-1], earlier_attempts=completions[:-1])

    def ask(
        self, context: Context, messages: list[dict[str, Any]], parameters: dict[str, Any]
    ) -> list[Completion]:
        """Send the request, and ask again (up to ``json_retries`` times) while the JSON is unusable.

        :return: every reply received, the last one to be published.
        """
        from airflow_o3.streaming import LineLog

        request_id = client_request_id(context)
        completions: list[Completion] = []
        while True:
            reply_log = LineLog(self._log_reply_line)
            attempt_id = f"{request_id}:r{len(completions)}"[-128:] if completions else request_id
            try:
                completion = self.hook.chat(
                    messages,
                    model=self.model,
                    client_request_id=attempt_id,
                    cache=self.response_cache(),
                    on_text=reply_log.add if self.stream else None,
                    **parameters,
                )
            finally:
                reply_log.close()
            completions.append(completion)
            problem = _unusable_json(completion, self.output_format)
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

    def defer_call(self, context: Context, messages: list[dict[str, Any]], parameters: dict[str, Any]) -> Any:
        """Hand the checked request to the triggerer and free the worker slot. The trigger gets no
        secret: the conn_id, the cache settings and the request's cache entry (a digest)."""
        from dataclasses import asdict

        from airflow_o3.cache import CacheSettings
        from airflow_o3.retry import RetryPolicy
        from airflow_o3.triggers.o3mini import O3MiniTrigger

        prepared = self.hook.prepare(
            messages, model=self.model, client_request_id=client_request_id(context), **parameters
        )
        cache = CacheSettings.coerce(self.cache)
        retry = asdict(self.retry) if isinstance(self.retry, RetryPolicy) else self.retry
        self.defer(
            trigger=O3MiniTrigger(
                conn_id=self.conn_id,
                body=prepared.body,
                client_request_id=prepared.client_request_id,
                retry=retry,
                timeout=self.timeout,
                cache=asdict(cache) if cache.mode != "off" else None,
                cache_key=self.hook.cache_key(prepared) if cache.mode != "off" else None,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the triggerer's call: publish its reply, or raise the error it met (the same
        typed error, with the same message, as a call made in the worker). The trigger has already
        read or written the response cache."""
        from airflow_o3.triggers.o3mini import completion_from_event

        with _task_failure_on_final_errors():
            completion = completion_from_event(event)
        if completion.from_cache:
            self.log.info(
                "The triggerer read the reply from the response cache (entry %s): nothing was paid for it",
                str(event.get("cache_key"))[:16],
            )
        return self.publish(context, completion)

    def _log_reply_line(self, index: int, line: str) -> None:
        several = (self.parameters.get("n") or 1) > 1
        self.log.info("reply%s | %s", f"[{index}]" if several else "", line)

    def dry_run_request(self, messages: list[dict[str, Any]], parameters: dict[str, Any]) -> dict[str, Any]:
        """Build and check the exact request body, log it and return it; nothing is sent.

        The model and URL come from the connection when it can be read; without one, the defaults.
        """
        from airflow.providers.common.compat.sdk import AirflowNotFoundException

        from airflow_o3.request import build_body
        from airflow_o3.settings import DEFAULT_BASE_URL, DEFAULT_MODEL

        try:
            model, url = self.model or self.hook.settings.model, self.hook.settings.chat_url
        except (AirflowNotFoundException, InvalidRequestError) as error:
            model, url = self.model or DEFAULT_MODEL, f"{DEFAULT_BASE_URL}/chat/completions"
            self.log.info("Dry run: connection %r not read (%s); assuming %s", self.conn_id, error, url)
        body = build_body(model, messages, parameters)
        self.log.info(
            "Dry run, nothing sent. The request would be POST %s with this body:\n%s",
            url,
            json.dumps(body, indent=2, ensure_ascii=False),
        )
        return body

    def publish(
        self, context: Context, completion: Completion, *, earlier_attempts: Sequence[Completion] = ()
    ) -> Any:
        """Check the reply, log a summary, push ``usage`` and ``completion``, return the task's result.

        :param earlier_attempts: the task's earlier replies (``json_retries``), billed too: their usage
            is added to ``usage``.
        """
        from airflow_o3.response import usage_over

        with _task_failure_on_final_errors():
            values = [reply_value(choice, completion, self.output_format) for choice in completion.choices]
        # the per-call summary line (tokens, cost, latency, ids) is logged by the hook's send()
        usage = usage_over([*earlier_attempts, completion])
        if earlier_attempts:
            self.log.info(
                "Over %d attempts: %s tokens, cost %s",
                usage["attempts"],
                usage.get("total_tokens"),
                f"${usage['usd_spent']:.6f}" if "usd_spent" in usage else "not reported",
            )
        self._published = {"model": completion.model, "usage": usage, "from_cache": completion.from_cache}
        ti = context["ti"]
        ti.xcom_push(key="usage", value=usage)
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
        return values if (self.parameters.get("n") or 1) > 1 else values[0]

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> O3Lineage:
        """The OpenLineage provider's hook: a run facet with the model, a sha256 of the rendered
        messages, the token usage and the cost (see :mod:`airflow_o3.lineage`). Called only when the
        provider is installed; nothing of OpenLineage is imported before."""
        from airflow_o3.lineage import operator_lineage, run_facet

        published = self._published
        if published is None:  # a dry run: nothing was asked, nothing paid
            return operator_lineage(None)
        return operator_lineage(
            run_facet(
                model=published["model"],
                messages=self.build_messages(),
                usage=published["usage"],
                from_cache=published["from_cache"],
            )
        )


def _unusable_json(
    completion: Completion, output: OutputFormat | None
) -> tuple[str | None, StructuredOutputError] | None:
    """The first choice whose reply is not the JSON asked for (its text and why), if any.

    Other failures (a refusal, a content filter, bad tool arguments) are not worth asking again for.
    """
    for choice in completion.choices:
        try:
            reply_value(choice, completion, output)
        except StructuredOutputError as error:
            return choice.text, error
        except CompletionError:
            return None
    return None


@contextmanager
def _task_failure_on_final_errors() -> Iterator[None]:
    """Errors that a task retry cannot mend (bad input, a wrong key, no answer) fail without retries.

    Retryable service errors (429, 5xx, timeouts) that outlived the hook's own retries, and streams
    that broke off, are raised as they are, so Airflow's task retries can try again later.
    """
    try:
        yield
    except O3Error as error:
        from airflow_o3.errors import ServiceError
        from airflow_o3.observability import record_error

        if not isinstance(error, ServiceError):  # the hook's send() counts the service's errors
            record_error(error)
        if error.retryable or isinstance(error, StreamCutError):
            raise
        raise AirflowFailException(str(error)) from error

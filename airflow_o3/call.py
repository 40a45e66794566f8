"""One request to o3-mini as a DAG author writes it (:class:`O3Call`), and what every path shares:
the checks made when a DAG is parsed, the prompt template rules, the reply's checks, the hook.

Imported at DAG parse time and by ``airflow-o3-render`` (which runs without Airflow): nothing here
imports Airflow, ``requests``, ``jsonschema`` or pydantic at module level.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_o3.contract import REFUSED
from airflow_o3.deprecations import warn_renamed
from airflow_o3.errors import CompletionError, InvalidRequestError, O3Error, RefusalError, StreamCutError
from airflow_o3.parameters import (
    CONTRACT_PARAMETERS,
    OWN_PARAMETERS,
    parameter_name_problem,
    parameter_value_problems,
)
from airflow_o3.structured import OutputFormat, output_format, parse_tool_calls

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import jinja2
    from airflow.providers.common.compat.sdk import Context

    from airflow_o3.cache import ResponseCache
    from airflow_o3.hooks.o3mini import O3MiniHook, PreparedCall
    from airflow_o3.response import Choice, Completion

TEMPLATE_EXT: tuple[str, ...] = (".j2", ".jinja", ".jinja2", ".md", ".txt")
"""The endings of a prompt template file's name."""

PROMPT_FIELDS: tuple[str, ...] = ("prompt", "system_prompt", "messages")
"""The template fields that hold the prompt (a batch renders them once per item)."""

RENAMED_ARGUMENTS: dict[str, str] = {
    "retry": "request_retry",
    "timeout": "read_timeout",
    "dry_run": "render_only",
}
"""Operator arguments renamed in 0.3 (old name: new name); the old names work, with a warning, until 0.4."""

Render = Callable[[Any], Any]
"""Renders a template field's value (a string, or a list or dict holding strings) for one task run."""

_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")
_JINJA_MARKERS = ("{{", "{%")
_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")
_PROMPT_RULES = "_airflow_o3_prompt_rules"


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
    if name in REFUSED:
        return parameter_name_problem(name)
    if name in CONTRACT_PARAMETERS and name not in OWN_PARAMETERS:
        return f"{name} is a request parameter, not an argument (fix: parameters={{{name!r}: ...}})"
    return None


def _parameters_problems(parameters: Mapping[str, Any], own: str) -> list[str]:
    problems = [problem for name in parameters if (problem := parameter_name_problem(name))]
    problems += [
        f"pass {name} as its own {own}, not in parameters" for name in OWN_PARAMETERS if name in parameters
    ]
    literal = {name: value for name, value in parameters.items() if is_literal(value)}
    return problems + parameter_value_problems(literal, "parameters[{name!r}]")


def check_arguments(task_id: str | None, arguments: Mapping[str, Any], *, own: str = "argument") -> None:
    """Refuse, when the DAG is parsed, the request arguments the service would refuse.

    Checked: request parameters given as operator arguments (``max_tokens=``, ``temperature=``,
    ``seed=``); ``parameters`` that o3-mini refuses or the contract does not know; the values of
    ``reasoning_effort``, ``max_completion_tokens`` and ``parameters`` written out in the DAG file
    (templates and upstream outputs are checked when the task runs).

    :param task_id: the task, named in the message (``None``: no prefix).
    :param arguments: the operator's keyword arguments as the DAG file gives them.
    :param own: what ``reasoning_effort`` and the like are called where they are given (an
        ``argument`` of the operator, an ``option`` of the command).
    :raises InvalidRequestError: naming the task, each wrong argument and its fix.
    """
    problems = [problem for name in arguments if (problem := _argument_name_problem(name))]
    values = {name: arguments.get(name) for name in ("reasoning_effort", "max_completion_tokens")}
    problems += parameter_value_problems({name: value for name, value in values.items() if is_literal(value)})
    parameters = arguments.get("parameters")
    if isinstance(parameters, dict):
        problems += _parameters_problems(parameters, own)
    if problems:
        raise InvalidRequestError(f"{task_id}: " * bool(task_id) + "; ".join(problems))


def take_renamed(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Take the renamed arguments out of ``kwargs`` (warning, naming the operator ``where``), under
    their new names."""
    renamed = {}
    for old, new in RENAMED_ARGUMENTS.items():
        if old in kwargs:
            warn_renamed(old, new, where)
            renamed[new] = kwargs.pop(old)
    return renamed


def names_template_file(text: str) -> bool:
    """Whether a prompt is the path of a template file: one word (no space, no Jinja) ending in a
    template extension; ``"Summarise the changes in CHANGELOG.md"`` is inline text."""
    return _is_one_word(text) and text.endswith(TEMPLATE_EXT)


def _is_one_word(text: str) -> bool:
    return bool(text) and not any(c.isspace() for c in text) and not any(m in text for m in _JINJA_MARKERS)


def _looks_like_other_file(text: str) -> bool:
    """A one-word prompt that looks like the path of a file that is no template (``prompts/ask.tpl``).

    Message contents are not judged so: a few-shot assistant answer may well be ``report.pdf``.
    """
    if not _is_one_word(text) or text.endswith(TEMPLATE_EXT) or "://" in text:
        return False
    return "/" in text or _FILE_SUFFIX.search(text) is not None


def template_source(env: jinja2.Environment, name: str, where: str) -> str:
    """The text of the template file ``name``, found as Airflow finds it; a missing file is an
    :class:`InvalidRequestError` listing where it was looked for (``where``: the task and field)."""
    import jinja2

    try:
        if env.loader is None:
            raise jinja2.TemplateNotFound(name)
        return env.loader.get_source(env, name)[0]
    except jinja2.TemplateNotFound:
        folders = [str(folder) for folder in getattr(env.loader, "searchpath", [])]
        looked = ", ".join(folders) if folders else "nowhere: the operator is in no DAG"
        raise InvalidRequestError(
            f"{where} names the template file {name!r}, which is not there (looked in: {looked}). "
            "Fix: create it, give its path relative to the DAG's folder or a template_searchpath "
            "folder, or write the prompt inline"
        ) from None


def read_template_files(env: jinja2.Environment, where: str, field_name: str, value: Any) -> Any:
    """A prompt field (``messages``: each content) with the template file it names, if it names one,
    replaced by the file's text; ``where`` is the task, for :func:`template_source`'s message."""
    if isinstance(value, str) and names_template_file(value):
        return template_source(env, value, f"{where}: {field_name}")
    if field_name != "messages" or not isinstance(value, list):
        return value
    return [
        _read_message_file(env, f"{where}: messages[{n}].content", message) for n, message in enumerate(value)
    ]


def _read_message_file(env: jinja2.Environment, where: str, message: Any) -> Any:
    content = message.get("content") if isinstance(message, dict) else None
    if not (isinstance(content, str) and names_template_file(content)):
        return message
    return {**message, "content": template_source(env, content, where)}


def prompt_environment(env: jinja2.Environment, where: str, *, strict: bool = False) -> jinja2.Environment:
    """``env`` with the prompt rules for Airflow's ``render_template`` (added once): text that is no
    template file's path (:func:`names_template_file`) is inline text, a missing file's error names
    where it was looked for, and each inline template is compiled once, however many items render it.

    :param where: the task, for the message.
    :param strict: make an undefined variable an error (outside a DAG, the environment is not the DAG's).
    """
    import jinja2

    if strict:
        env.undefined = jinja2.StrictUndefined
    if getattr(env, _PROMPT_RULES, False):
        return env
    compiled: dict[str, jinja2.Template] = {}
    compile_text, load_file = env.from_string, env.get_template

    def from_string(source: Any, globals: Any = None, template_class: Any = None) -> jinja2.Template:
        if globals is not None or template_class is not None or not isinstance(source, str):
            return compile_text(source, globals, template_class)
        if (template := compiled.get(source)) is None:
            template = compiled[source] = compile_text(source)
        return template

    def get_template(name: Any, parent: Any = None, globals: Any = None) -> jinja2.Template:
        if isinstance(name, str) and not names_template_file(name):
            return from_string(name)
        template_source(env, str(name), f"{where}: a template field")
        return load_file(name, parent, globals)

    env.from_string = from_string  # type: ignore[method-assign]
    env.get_template = get_template  # type: ignore[method-assign]
    setattr(env, _PROMPT_RULES, True)
    return env


def reply_value(choice: Choice, completion: Completion, output: OutputFormat | None) -> Any:
    """What one choice hands downstream: its tool calls, its parsed JSON, or its text. A choice that
    is no answer is refused, so an empty string never travels downstream.

    :raises CompletionError: the reasoning used the whole budget, the model refused (of structured
        output: a :class:`RefusalError`), or the content filter stopped it; the message says what to
        change. Tool arguments that are not JSON are a ``ToolCallError``, a reply that is not the JSON
        asked for a ``StructuredOutputError``.
    """
    if choice.refusal and output is not None and output.is_json:
        raise RefusalError(
            f"o3-mini refused to give the structured output ({output.kind}): {choice.refusal!r}. "
            "Asking again does not help; rephrase the prompt or review the upstream data it includes"
        )
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
    if choice.tool_calls:
        return parse_tool_calls(choice.tool_calls)
    if output is not None:
        return output.parse(choice.text, choice.finish_reason)
    return choice.text


@contextmanager
def task_failure_on_final_errors() -> Iterator[None]:
    """Errors that a task retry cannot mend (bad input, a wrong key, no answer) fail without retries.

    Retryable service errors (429, 5xx, timeouts) that outlived the hook's own retries, and streams
    that broke off, are raised as they are, so Airflow's task retries can try again later.
    """
    try:
        yield
    except O3Error as error:
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_o3.errors import ServiceError
        from airflow_o3.observability import record_error

        if not isinstance(error, ServiceError):  # the hook's send() counts the service's errors
            record_error(error)
        if error.retryable or isinstance(error, StreamCutError):
            raise
        raise AirflowFailException(str(error)) from error


def _as_is(value: Any) -> Any:
    return value


def _as_text(value: Any) -> Any:
    """A rendered prompt as text (a native-object environment may render ``{{ n }}`` to a number)."""
    return value if value is None or isinstance(value, str | list) else str(value)


@dataclass(frozen=True)
class O3Call:
    """One request as the DAG author describes it: the prompt templates, the model and the parameters.

    Its fields are the :class:`~airflow_o3.operators.O3MiniOperator` arguments of the same name, but
    ``output``, the reply's format (``response_format`` read; ``None`` for text). Build it with
    :meth:`from_arguments`, which refuses at DAG parse time what can be refused then.
    """

    prompt: Any = None
    system_prompt: Any = None
    messages: Any = None
    model: Any = None
    reasoning_effort: Any = None
    max_completion_tokens: Any = None
    output: OutputFormat | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False

    @classmethod
    def from_arguments(
        cls, arguments: Mapping[str, Any], others: Mapping[str, Any] | None = None, *, own: str = "argument"
    ) -> O3Call:
        """The call an operator's arguments describe, after every check that can be made at DAG parse.

        :param arguments: the operator's named arguments (its ``locals()`` in ``__init__``): the
            fields of :class:`O3Call` and ``response_format`` are taken from them.
        :param others: its other keyword arguments (``task_id``, ...), which must hold no request
            parameter. Both are checked by :func:`check_arguments` (``own`` is its argument).
        :raises InvalidRequestError: both or neither of ``prompt`` and ``messages``, a ``system_prompt``
            with ``messages``, a prompt that names a file that is no template, a bad ``response_format``.
        """
        fields = {name: arguments[name] for name in _ARGUMENTS if name in arguments}
        task_id = (others or {}).get("task_id")
        check_arguments(task_id, {**(others or {}), **fields}, own=own)
        prefix = f"{task_id}: " * bool(task_id)
        prompt, system_prompt, messages = (fields.get(name) for name in PROMPT_FIELDS)
        if (prompt is None) == (messages is None):
            raise InvalidRequestError(
                f"{prefix}pass either prompt or messages (fix: use prompt for one user message, "
                "messages for a whole conversation)"
            )
        if messages is not None and system_prompt is not None:
            raise InvalidRequestError(
                f"{prefix}system_prompt goes with prompt (fix: put a developer message first in messages)"
            )
        for name, text in (("prompt", prompt), ("system_prompt", system_prompt)):
            if isinstance(text, str) and _looks_like_other_file(text):
                raise InvalidRequestError(
                    f"{prefix}{name} {text!r} looks like the path of a file, but only files ending "
                    f"{', '.join(TEMPLATE_EXT)} are read as templates, so it would be sent as it is "
                    "(fix: rename the file to one of those extensions, or write the prompt inline)"
                )
        try:
            output = output_format(fields.pop("response_format", None))
        except InvalidRequestError as error:
            raise InvalidRequestError(f"{prefix}{error}") from None
        return cls(output=output, **{**fields, "parameters": dict(fields.get("parameters") or {})})

    @property
    def choices(self) -> int:
        """How many answers are asked for (``n``): with more than one, the result is a list."""
        return int(self.parameters.get("n") or 1)

    def conversation(self, render: Render = _as_is) -> list[dict[str, Any]]:
        """The rendered, checked conversation; an empty prompt is refused before anything is sent.

        :param render: renders a template field's value (Airflow's ``render_template`` with the task's
            context); the default takes the values as they are (already rendered).
        :raises InvalidRequestError: naming the empty field and the fix.
        """
        if self.messages is not None:
            messages = [dict(message) for message in render(self.messages)]
            fields = [f"messages[{position}].content" for position in range(len(messages))]
        else:
            messages = [{"role": "user", "content": _as_text(render(self.prompt))}]
            fields = ["prompt"]
            if self.system_prompt is not None:
                messages.insert(0, {"role": "developer", "content": _as_text(render(self.system_prompt))})
                fields.insert(0, "system_prompt")
        for name, message in zip(fields, messages, strict=True):
            content = message.get("content")
            if isinstance(content, str) and not content.strip() and message.get("role") != "assistant":
                raise InvalidRequestError(
                    f"the rendered {name} is empty (fix: check the template and the values it pulls in)"
                )
        if self.output is not None:
            self.output.check(messages)
        return messages

    def request_parameters(self) -> dict[str, Any]:
        """The contract parameters of the request, unset ones left out."""
        return {
            "reasoning_effort": self.reasoning_effort,
            "max_completion_tokens": self.max_completion_tokens,
            "response_format": dict(self.output.response_format) if self.output else None,
            "stream": True if self.stream else None,
            **self.parameters,
        }

    def body(self, model: str, messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The exact request body for this conversation, checked against the contract.

        :raises InvalidRequestError: the field that is wrong and how to fix it.
        """
        from airflow_o3.request import build_body

        return build_body(self.model or model, messages, self.request_parameters())

    def prepare(
        self, hook: O3MiniHook, messages: Sequence[Mapping[str, Any]], client_request_id: str | None
    ) -> PreparedCall:
        """The checked request, ready for ``hook.send``, traced at the service by ``client_request_id``."""
        return hook.prepare(
            messages, model=self.model, client_request_id=client_request_id, **self.request_parameters()
        )

    def result(self, completion: Completion) -> Any:
        """What the reply hands downstream: one choice's value, or a list of them with ``n`` > 1.

        :raises CompletionError: a choice is no answer (see :func:`reply_value`).
        """
        values = [reply_value(choice, completion, self.output) for choice in completion.choices]
        return values if self.choices > 1 else values[0]


REQUEST_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(O3Call) if f.name != "output")
"""The fields of :class:`O3Call` that are operator arguments of the same name."""

_ARGUMENTS = (*REQUEST_FIELDS, "response_format")


def connection_hook(owner: Any, **options: Any) -> O3MiniHook:
    """The hook of an operator's or a trigger's ``conn_id``, ``request_retry``, ``read_timeout`` and
    ``fallback_conn_ids``; ``options`` are the hook's other arguments."""
    from airflow_o3.hooks.o3mini import O3MiniHook

    return O3MiniHook(
        conn_id=owner.conn_id,
        request_retry=owner.request_retry,
        read_timeout=owner.read_timeout,
        fallback_conn_ids=owner.fallback_conn_ids,
        **options,
    )


def response_cache(cache: Any) -> ResponseCache | None:
    """The response cache a task's ``cache`` argument asks for, ``None`` when it is off."""
    from airflow_o3.cache import CacheSettings, ResponseCache

    settings = CacheSettings.coerce(cache)
    return ResponseCache(settings) if settings.mode != "off" else None


def as_written(value: Any) -> Any:
    """A value Airflow's rendering at task start leaves as written (Airflow's ``literal``): a per-item
    template, or items given as a list, which are data."""
    from airflow.providers.common.compat.sdk import literal

    return None if value is None else literal(value)


def unwrapped(value: Any) -> Any:
    """What :func:`as_written` wrapped (a field Airflow has not rendered yet), or the value itself."""
    from airflow.providers.common.compat.sdk import literal

    return value.value if isinstance(value, type(literal(None))) else value


class PromptOperator:
    """What the operators (a ``BaseOperator`` subclass each) share: the prompt template files, their
    renderers and rendering rules, and the checks of the arguments given to ``partial``."""

    template_ext: Sequence[str] = TEMPLATE_EXT
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "prompt": "md",
        "system_prompt": "md",
        "messages": "json",
    }
    task_id: str

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: Any = None,
    ) -> Any:
        """Airflow's ``render_template``, with the prompt rules of :func:`prompt_environment`;
        outside a DAG an undefined variable is always an error."""
        if jinja_env is None:
            jinja_env = self.get_template_env()  # type: ignore[attr-defined]
        strict = not self.has_dag()  # type: ignore[attr-defined]
        env = prompt_environment(jinja_env, self.task_id, strict=strict)
        return super().render_template(content, context, env, seen_oids)  # type: ignore[misc]

    def resolve_template_files(self) -> None:
        """Read the prompt template files when the DAG is parsed, by the rule of docs/operator.md
        ("Prompt files"): only the prompt fields, only a one-word path, and the file must exist."""
        env = self.get_template_env()  # type: ignore[attr-defined]
        for name in PROMPT_FIELDS:
            value = getattr(self, name)
            read = read_template_files(env, self.task_id, name, unwrapped(value))
            setattr(self, name, read if value is unwrapped(value) else as_written(read))  # a batch's
        self.prepare_template()  # type: ignore[attr-defined]

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Airflow's ``partial``, with the operator's checks of the arguments given there, so a
        mistake fails at DAG parse as it does without mapping."""
        kwargs.update(take_renamed(kwargs, cls.__name__))
        check_arguments(kwargs.get("task_id"), kwargs)
        return super().partial(**kwargs)  # type: ignore[misc]

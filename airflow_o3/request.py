"""Build and check the request body, before anything is sent or paid for.

The body is checked against the service's contract for o3-mini with a pydantic model, so a typo or a
value the service would refuse is a local error that names the field and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_o3.errors import InvalidRequestError
from airflow_o3.parameters import VALUE_RULES, check_parameter_names, check_parameter_values

if TYPE_CHECKING:
    from collections.abc import Sequence

FIELD_FIXES: Mapping[str, str] = {
    "model": "name the model as a string, e.g. 'o3-mini'",
    "messages": (
        "send a non-empty list of {role, content} dicts; roles are user, developer, system, assistant "
        "and tool, and content is text (a string or a list of {'type': 'text', 'text': ...} parts)"
    ),
    "tools": "use at most 128 {'type': 'function', 'function': {name, parameters}} entries",
    "response_format": (
        "use {'type': 'text'}, {'type': 'json_object'} or "
        "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}; the name is 1 to 64 "
        "of a-z, A-Z, 0-9, _ and -"
    ),
    "stream_options": "use {'include_usage': true}",
    **{name: rule.fix for name, rule in VALUE_RULES.items()},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _TextPart(_Strict):
    type: Literal["text"]
    text: str


_Content = str | list[_TextPart]


class _UserMessage(_Strict):
    role: Literal["user"]
    content: _Content
    name: str | None = None


class _DeveloperMessage(_Strict):
    role: Literal["developer"]
    content: _Content
    name: str | None = None


class _SystemMessage(_Strict):
    role: Literal["system"]
    content: _Content
    name: str | None = None


class _FunctionCall(_Strict):
    name: str
    arguments: str


class _ToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: _FunctionCall


class _RefusalPart(_Strict):
    type: Literal["refusal"]
    refusal: str


class _AssistantMessage(_Strict):
    """Also a reply's message echoed back as it came (``annotations`` and ``audio`` included)."""

    role: Literal["assistant"]
    content: str | list[_TextPart | _RefusalPart] = ""
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None
    annotations: list[dict[str, Any]] | None = None
    audio: dict[str, Any] | None = None


class _ToolMessage(_Strict):
    role: Literal["tool"]
    content: str
    tool_call_id: str
    name: str | None = None


_Message = Annotated[
    _UserMessage | _DeveloperMessage | _SystemMessage | _AssistantMessage | _ToolMessage,
    Field(discriminator="role"),
]


class _FunctionDefinition(_Strict):
    name: str
    description: str = ""  # may be left out, never null
    parameters: dict[str, Any]
    strict: bool | None = None


class _Tool(_Strict):
    type: Literal["function"]
    function: _FunctionDefinition


class _NamedFunction(_Strict):
    name: str


class _NamedToolChoice(_Strict):
    type: Literal["function"]
    function: _NamedFunction


class _TextFormat(_Strict):
    type: Literal["text"]


class _JsonObjectFormat(_Strict):
    type: Literal["json_object"]


class _JsonSchema(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")  # may be left out, never null
    strict: bool | None = None
    description: str = ""  # may be left out, never null


class _JsonSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: _JsonSchema


class _StreamOptions(_Strict):
    include_usage: bool


class _ChatRequest(_Strict):
    model: str
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=100_000)
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | _NamedToolChoice | None = None
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = Field(default=None, ge=1)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    response_format: (
        Annotated[_TextFormat | _JsonObjectFormat | _JsonSchemaFormat, Field(discriminator="type")] | None
    ) = None
    provider: str | None = None


_MESSAGE_PATH = re.compile(r"messages\[\d+\]")


def _field_path(location: Sequence[int | str]) -> str:
    """``messages[0].content`` from pydantic's location, without union-member and tag segments."""
    path = ""
    previous: int | str | None = None
    for part in location:
        is_tag = previous == "response_format" or (
            isinstance(previous, int) and _MESSAGE_PATH.fullmatch(path) is not None
        )
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (is_tag or "[" in part or part == "str"):
            path += f".{part}" if path else part
        previous = part
    return path


def _describe(error: ValidationError) -> str:
    problems: dict[str, None] = {}
    fixes: dict[str, None] = {}
    for item in error.errors(include_url=False, include_input=False):
        path = _field_path(item["loc"]) or "body"
        problems[f"{path}: {item['msg']}"] = None
        field = path.split(".")[0].split("[")[0]
        if field in FIELD_FIXES:
            fixes[f"{field}: {FIELD_FIXES[field]}"] = None
    return "; ".join(problems) + (". Fix: " + "; ".join(fixes) if fixes else "")


def build_body(
    model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON body for one chat completion, checked against the contract.

    :param model: the model to call, e.g. ``o3-mini``.
    :param messages: role/content dicts. A key set to ``None`` is left out (null and absent mean the
        same there, and the service refuses null for most keys), so a reply's message can be echoed
        back as it came, ``tool_calls: None`` and all.
    :param params: optional contract parameters; those set to ``None`` are left out. A streamed
        request (``stream=True``) asks for the final usage chunk (``stream_options.include_usage``)
        unless ``stream_options`` is given, so streamed calls report their tokens and cost too.
    :raises InvalidRequestError: a parameter o3-mini refuses, an unknown parameter, or a value outside
        the contract; the message names each field and the fix.
    """
    check_parameter_names(params)
    check_parameter_values(params)
    body: dict[str, Any] = {"model": model, "messages": _without_nulls(messages)}
    body.update((name, value) for name, value in params.items() if value is not None)
    if body.get("stream") is True and "stream_options" not in body:
        body["stream_options"] = {"include_usage": True}
    try:
        _ChatRequest.model_validate(body)
    except ValidationError as error:
        raise InvalidRequestError("Request refused before sending: " + _describe(error)) from None
    _check_json(body)
    return body


def _without_nulls(messages: Any) -> Any:
    """The messages without their keys set to ``None``; anything but a list of dicts is left as it
    is, for the check to refuse."""
    if not isinstance(messages, list | tuple):
        return messages
    return [
        {name: value for name, value in message.items() if value is not None}
        if isinstance(message, Mapping)
        else message
        for message in messages
    ]


def _check_json(body: Mapping[str, Any]) -> None:
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidRequestError(
            f"Request refused before sending: the body cannot be encoded as JSON ({error}) "
            "(fix: pass plain strings, numbers, lists and dicts, e.g. convert dates with str())"
        ) from None


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The body as compact UTF-8 JSON, the bytes that are sent and that the response cache keys on."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

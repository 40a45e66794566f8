"""Build and check the request body, before anything is sent or paid for.

The check is the contract's own schema (:func:`airflow_o3.contract.request_schema`) compiled once,
on first use, into a pydantic-core validator: a typo or a value the service would refuse is a local
error that names the field and the fix. (``jsonschema`` takes 100 us of CPU for a one-message body
and 700 us for a rich one; the compiled validator 7 and 30 us, the whole of :func:`build_body`.) The
stand-in server checks the bodies it receives with the same code.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic_core import SchemaValidator, ValidationError, core_schema

from airflow_o3.contract import REFUSED, request_schema
from airflow_o3.errors import InvalidRequestError
from airflow_o3.parameters import misvalued, parameter_name_problem

if TYPE_CHECKING:
    from collections.abc import Sequence

REFUSED_BEFORE_SENDING = "Request refused before sending: "

_REQUIRED = ("model", "messages")
_CONSTRAINING = frozenset({"type", "enum", "anyOf", "oneOf", "properties", "items"})


class Problem(NamedTuple):
    """One thing in a body the service would refuse.

    :param field: the top-level key it is about, e.g. ``messages``.
    :param text: where and what, e.g. ``messages[0].content: Field required``.
    :param code: OpenAI's error code for it: ``unsupported_parameter``, ``unknown_parameter``,
        ``missing_required_parameter`` or ``invalid_value``.
    :param fix: what to write instead, when ``text`` does not say it.
    """

    field: str
    text: str
    code: str
    fix: str | None = None


def describe(schema: Mapping[str, Any]) -> str:
    """What a schema allows, as a DAG author reads it: ``'low', 'medium' or 'high'``."""
    *first, last = _alternatives(schema)
    return f"{', '.join(first)} or {last}" if first else last


def _alternatives(schema: Mapping[str, Any]) -> list[str]:
    branches = schema.get("oneOf") or schema.get("anyOf")
    if branches:
        return [text for branch in branches if not _only_null(branch) for text in _alternatives(branch)]
    if "enum" in schema:
        return [repr(value) for value in schema["enum"]]
    return [_one(schema)]


def _one(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if kind == "integer":
        return "a whole number" + _range(schema)
    if kind == "array":
        items = schema.get("items", {})
        most = f"at most {schema['maxItems']} " if "maxItems" in schema else ""
        start = "a non-empty list of " if schema.get("minItems") else "a list of "
        return start + most + ("strings" if items.get("type") == "string" else describe(items))
    if kind == "object":
        properties = schema.get("properties", {})
        required = [name for name in schema.get("required", ()) if name in properties]
        tags_first = sorted(required, key=lambda name: "enum" not in properties[name])
        shown = (f"{name!r}: {describe(properties[name])}" for name in tags_first)
        return "{" + ", ".join(shown) + "}"
    return {"string": "a string", "boolean": "true or false", "number": "a number"}.get(
        kind or "", "any value"
    )


def _range(schema: Mapping[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of {low} or more"
    return f" of at most {high}" if high is not None else ""


def _only_null(schema: Mapping[str, Any]) -> bool:
    """An OpenAPI 3.0 ``{"nullable": true}`` with no constraint: as a union's branch, it means null."""
    return bool(schema.get("nullable")) and not _CONSTRAINING & schema.keys()


def _compiled(schema: Mapping[str, Any]) -> core_schema.CoreSchema:
    """The pydantic-core schema of one OpenAPI 3.0 schema object (the keywords the document uses)."""
    compiled = _compiled_type(schema)
    return core_schema.nullable_schema(compiled) if schema.get("nullable") else compiled


def _compiled_type(schema: Mapping[str, Any]) -> core_schema.CoreSchema:
    branches = schema.get("oneOf") or schema.get("anyOf")
    if branches:
        return _union(branches)
    if "enum" in schema:
        return core_schema.literal_schema(list(schema["enum"]))
    low, high = schema.get("minimum"), schema.get("maximum")
    match schema.get("type"):
        case "string":
            return core_schema.str_schema(strict=True, pattern=schema.get("pattern"))
        case "integer":
            return core_schema.int_schema(strict=True, ge=low, le=high)
        case "number":
            return core_schema.float_schema(strict=True, ge=low, le=high, allow_inf_nan=False)
        case "boolean":
            return core_schema.bool_schema(strict=True)
        case "array":
            items = _compiled(schema.get("items", {}))
            return core_schema.list_schema(
                items, min_length=schema.get("minItems"), max_length=schema.get("maxItems"), strict=True
            )
        case "object":
            return _object(schema)
    return core_schema.any_schema()


def _object(schema: Mapping[str, Any]) -> core_schema.CoreSchema:
    extra = schema.get("additionalProperties", True)
    if not schema.get("properties"):
        values = _compiled(extra) if isinstance(extra, Mapping) else core_schema.any_schema()
        return core_schema.dict_schema(core_schema.str_schema(), values, strict=True)
    required = set(schema.get("required", ()))
    fields = {
        name: core_schema.typed_dict_field(_compiled(sub), required=name in required)
        for name, sub in schema["properties"].items()
    }
    return core_schema.typed_dict_schema(
        fields, extra_behavior="forbid" if extra is False else "allow", strict=True
    )


def _union(branches: Sequence[Mapping[str, Any]]) -> core_schema.CoreSchema:
    """A ``oneOf``/``anyOf``: tagged by the property each branch fixes to its own value (``role``,
    ``type``), else tried in turn; a branch is named by its position, for :func:`_field_path`."""
    tagged = _tagged(branches)
    if tagged is not None:
        name, by_value = tagged
        choices = {value: _compiled(branch) for value, branch in by_value.items()}
        return core_schema.tagged_union_schema(choices, discriminator=name)
    return core_schema.union_schema(
        [
            (core_schema.none_schema() if _only_null(branch) else _compiled(branch), str(position))
            for position, branch in enumerate(branches)
        ]
    )


def _tagged(branches: Sequence[Mapping[str, Any]]) -> tuple[str, dict[Any, Mapping[str, Any]]] | None:
    """The property each branch fixes to a value of its own, and the branches by that value."""
    for name in branches[0].get("properties", {}):
        values = [branch.get("properties", {}).get(name, {}).get("enum", ()) for branch in branches]
        if all(len(value) == 1 for value in values) and len({value[0] for value in values}) == len(branches):
            return name, {value[0]: branch for value, branch in zip(values, branches, strict=True)}
    return None


@functools.cache
def _validator(name: str) -> SchemaValidator:
    """The validator of one top-level field, compiled on its first check."""
    return SchemaValidator(_compiled(request_schema()["properties"][name]))


def _field_path(location: Sequence[int | str], schema: Mapping[str, Any], path: str) -> str:
    """``tools[0].function.name`` from pydantic-core's location inside the field ``path``, read along
    the field's schema so that the names of union branches (a tag such as ``user``, a position) are
    left out."""
    node = schema
    for part in location:
        branches = node.get("oneOf") or node.get("anyOf")
        if branches:
            tagged = _tagged(branches)
            node = tagged[1].get(part, {}) if tagged else branches[int(part)]
        elif isinstance(part, int):
            path += f"[{part}]"
            node = node.get("items", {})
        else:
            path += f".{part}"
            node = node.get("properties", {}).get(part, {})
    return path


def fix_for(field: str) -> str:
    """What to write instead of a wrong value of the top-level field ``field``."""
    return "use " + describe(request_schema()["properties"][field])


def value_problems(name: str, value: Any, label: str | None = None) -> list[Problem]:
    """What the contract refuses in the value of the top-level field ``name``: nothing when it allows
    the value or has no say (a name it does not list, or one o3-mini refuses).

    A parameter wrong as a whole reads ``name: got <value> (fix: ...)``; anything else
    ``tools[0].function.name: <what>``, with the field's fix in :attr:`Problem.fix`.

    :param label: how to name the field, e.g. ``parameters['tools']`` (default: its name).
    """
    properties = request_schema()["properties"]
    if name in REFUSED or name not in properties or _validator(name).isinstance_python(value):
        return []
    try:
        _validator(name).validate_python(value)
    except ValidationError as error:
        label = label or name
        found = [
            (_field_path(item["loc"], properties[name], label), item["msg"])
            for item in error.errors(include_url=False, include_input=False)
        ]
        if name not in _REQUIRED and any(path == label for path, _ in found):
            return [Problem(name, misvalued(label, value, fix_for(name)), "invalid_value")]
        return [Problem(name, f"{path}: {what}", "invalid_value", fix_for(name)) for path, what in found]
    return []


def body_problems(body: Mapping[str, Any]) -> list[Problem]:
    """Everything in ``body`` the service would refuse: parameters o3-mini refuses or the contract
    does not know, a missing ``model`` or ``messages``, values outside the contract; empty when the
    body may be sent."""
    problems = [
        Problem(name, text, "unsupported_parameter" if name in REFUSED else "unknown_parameter")
        for name in body
        if name not in _REQUIRED and (text := parameter_name_problem(name))
    ]
    problems += [
        Problem(name, f"{name}: Field required", "missing_required_parameter")
        for name in _REQUIRED
        if name not in body
    ]
    for name, value in body.items():
        problems += value_problems(name, value)
    return problems


def refusal(problems: Sequence[Problem]) -> InvalidRequestError:
    """The error that refuses a body for ``problems``: each named, then the fixes not yet said."""
    texts = dict.fromkeys(problem.text for problem in problems)
    fixes = dict.fromkeys(f"{problem.field}: {problem.fix}" for problem in problems if problem.fix)
    return InvalidRequestError(
        REFUSED_BEFORE_SENDING + "; ".join(texts) + (". Fix: " + "; ".join(fixes) if fixes else "")
    )


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
    body: dict[str, Any] = {"model": model, "messages": _without_nulls(messages)}
    body.update((name, value) for name, value in params.items() if value is not None)
    if body.get("stream") is True and "stream_options" not in body:
        body["stream_options"] = {"include_usage": True}
    problems = body_problems(body)
    if problems:
        raise refusal(problems)
    encode_body(body)  # the check that it can be sent as it will be
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


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The body as compact UTF-8 JSON, the bytes that are sent and that the response cache keys on.

    :raises InvalidRequestError: a value JSON has no form for, or text UTF-8 cannot carry (a lone
        surrogate, as a badly decoded file leaves).
    """
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise InvalidRequestError(
            f"{REFUSED_BEFORE_SENDING}the body cannot be encoded as JSON ({error}) "
            "(fix: pass plain strings, numbers, lists and dicts, e.g. convert dates with str())"
        ) from None

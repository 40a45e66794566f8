"""Structured output: the ``response_format`` a task asks for, and the reading of the JSON reply
(and of tool-call arguments, JSON written by the model as well).

Light at import time: it is imported when a DAG file is parsed. ``jsonschema`` is imported only when
a reply or a schema is checked, and pydantic never: a model class is recognised by its
``model_json_schema`` method.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from airflow_o3.errors import InvalidRequestError, StructuredOutputError, ToolCallError

if TYPE_CHECKING:
    import jsonschema

    from airflow_o3.response import ToolCall

FormatKind = Literal["text", "json_object", "json_schema"]

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("$defs", "definitions", "properties")
_HOW_TO_PASS = (
    "pass a JSON Schema dict of an object, a pydantic model class, 'json_object', or the contract's "
    "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}"
)


@dataclass(frozen=True)
class OutputFormat:
    """What a task asks the reply to be, and how the reply is read.

    :ivar kind: ``text``, ``json_object`` (any JSON object) or ``json_schema`` (an object matching
        ``schema``).
    :ivar response_format: the contract's ``response_format`` value, sent as it stands.
    :ivar schema: the schema as sent (strict form), that replies are validated against.
    """

    kind: FormatKind
    response_format: Mapping[str, Any]
    schema: Mapping[str, Any] | None = None

    @property
    def is_json(self) -> bool:
        """The reply is JSON, parsed before it goes downstream."""
        return self.kind != "text"

    def check(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Refuse, before anything is sent, what the service would refuse or could not honour.

        :raises InvalidRequestError: the schema is not valid JSON Schema, or ``json_object`` mode is
            used without the word "JSON" in any message (the service answers 400 to that).
        """
        if self.schema is not None:
            from jsonschema.exceptions import SchemaError

            try:
                _validator_class(self.schema).check_schema(self.schema)
            except SchemaError as error:
                raise InvalidRequestError(
                    f"response_format: the schema is not valid JSON Schema at {error.json_path}: "
                    f"{error.message} (fix: correct the schema; check it with jsonschema's check_schema)"
                ) from None
        mentions_json = any("json" in _text(message.get("content")).lower() for message in messages)
        if self.kind == "json_object" and not mentions_json:
            raise InvalidRequestError(
                "response_format 'json_object' needs the word JSON in the prompt or the system prompt "
                "(the service refuses the request otherwise) (fix: say what JSON to answer with, or pass "
                "a schema instead)"
            )

    def parse(self, text: str | None, finish_reason: str | None) -> Any:
        """The reply as plain JSON data (dicts, lists, strings, numbers), checked against the schema.

        :raises StructuredOutputError: the reply is not JSON, was cut off, or does not match; the
            message quotes the start of the reply.
        """
        if not self.is_json:
            return text
        reply = text or ""
        truncated = finish_reason == "length"
        try:
            value = json.loads(reply, parse_constant=not_json)
        except ValueError as error:
            what, fix = ("the reply is not valid JSON", "")
            if truncated:
                what = "the JSON reply was cut off at the token budget (finish_reason length)"
                fix = ". Fix: raise max_completion_tokens or lower reasoning_effort"
            raise StructuredOutputError(
                f"{what}: {error}. Start of the reply: {_start(reply)}{fix}"
            ) from None
        if problems := self._problems(value):
            cut = " (finish_reason length: the reply may be cut off)" if truncated else ""
            what = (
                "json_object format"
                if self.schema is None
                else f"schema {self.response_format['json_schema']['name']!r}"
            )
            raise StructuredOutputError(
                f"the reply does not match the {what}{cut}: {'; '.join(problems)}. "
                f"Start of the reply: {_start(reply)}"
            )
        return value

    def _problems(self, value: Any) -> list[str]:
        if self.schema is None:
            return [] if isinstance(value, dict) else [f"$: {type(value).__name__} is not a JSON object"]
        validator = _validator_class(self.schema)(self.schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: (len(e.absolute_path), e.message))
        shown = [f"{e.json_path}: {e.message}" for e in errors[:5]]
        if len(errors) > 5:
            shown.append(f"and {len(errors) - 5} more")
        return shown


def output_format(value: Any) -> OutputFormat | None:
    """The :class:`OutputFormat` for what a DAG author passed as ``response_format``.

    :param value: ``None``; ``"text"`` or ``"json_object"``; a JSON Schema dict (its top level an
        object); a pydantic model class; or the contract's response format dict. A schema is sent as
        ``json_schema`` with ``strict: true``, every object closed (``additionalProperties: false``)
        and every property listed in ``required`` (declare an optional field as nullable instead).
    :raises InvalidRequestError: the value is none of these, or the schema cannot be made strict.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value not in ("text", "json_object"):
            raise InvalidRequestError(f"response_format {value!r} is not known (fix: {_HOW_TO_PASS})")
        return OutputFormat(value, {"type": value})  # type: ignore[arg-type]
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return _json_schema_format(value.model_json_schema(), name=value.__name__)
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            f"response_format of type {type(value).__name__} is not understood (fix: {_HOW_TO_PASS})"
        )
    kind = value.get("type")
    if kind in get_args(FormatKind) and ("json_schema" in value or set(value) == {"type"}):
        return _contract_format(value)
    return _json_schema_format(value)


def _contract_format(value: Mapping[str, Any]) -> OutputFormat:
    if value["type"] != "json_schema":
        return OutputFormat(value["type"], dict(value))
    spec = value.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
        raise InvalidRequestError(
            "response_format: json_schema needs a 'schema' dict (fix: pass the schema itself, or "
            "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}})"
        )
    if spec.get("strict") is False:
        schema = dict(spec["schema"])
        return OutputFormat("json_schema", {"type": "json_schema", "json_schema": dict(spec)}, schema)
    return _json_schema_format(spec["schema"], name=spec.get("name"), description=spec.get("description"))


def _json_schema_format(
    schema: Mapping[str, Any], *, name: str | None = None, description: str | None = None
) -> OutputFormat:
    strict = strict_schema(schema)
    # a name the contract accepts: a-z A-Z 0-9 _ -, at most 64
    safe_name = _NAME_UNSAFE.sub("_", str(name or strict.get("title") or "")).strip("_")[:64]
    spec: dict[str, Any] = {"name": safe_name or "response", "schema": strict, "strict": True}
    if description:
        spec["description"] = description
    return OutputFormat("json_schema", {"type": "json_schema", "json_schema": spec}, strict)


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` in the form strict structured output needs.

    Every object gets ``additionalProperties: false`` and lists all its properties in ``required``;
    ``default`` values are dropped (every property is always present) and a ``$ref`` with sibling
    keywords is inlined (strict mode accepts a bare ``$ref`` only). Objects under ``$defs``,
    ``properties``, ``items``, ``anyOf`` and the like are treated the same way.

    :raises InvalidRequestError: the top level is not an object, or an object allows properties of
        any name (a free-form map), which strict mode cannot describe.
    """
    root = copy.deepcopy(dict(schema))
    _make_strict(root, root, "$")
    if root.get("type") != "object":
        raise InvalidRequestError(
            "response_format: the schema's top level must be an object, not "
            f"{root.get('type') or 'a combination'} (fix: wrap it, e.g. "
            "{'type': 'object', 'properties': {'items': <your schema>}})"
        )
    return root


def _make_strict(node: dict[str, Any], root: dict[str, Any], path: str) -> None:
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        node.clear()
        node.update(copy.deepcopy(_resolve(root, ref, path)))
        node.update(siblings)
    node.pop("default", None)
    kind = node.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in node:
        extra = node.get("additionalProperties", False)
        if extra is not False:
            raise InvalidRequestError(
                f"response_format: the object at {path} allows properties of any name, which strict "
                "structured output cannot describe (fix: name every property under 'properties', or "
                "use a list of {'key': ..., 'value': ...} objects)"
            )
        node["additionalProperties"] = False
        node["required"] = list(node.get("properties", {}))
    for key in _SCHEMA_MAPS:
        for name, sub in (node.get(key) or {}).items():
            if isinstance(sub, dict):
                _make_strict(sub, root, f"{path}.{key}.{name}")
    for key in _SCHEMA_LISTS:
        for position, sub in enumerate(node.get(key) or []):
            if isinstance(sub, dict):
                _make_strict(sub, root, f"{path}.{key}[{position}]")
    if isinstance(node.get("items"), dict):
        _make_strict(node["items"], root, f"{path}.items")


def _resolve(root: Mapping[str, Any], ref: str, path: str) -> Mapping[str, Any]:
    node: Any = root
    if ref.startswith("#"):
        for part in filter(None, ref[1:].split("/")):
            node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, Mapping) else None
    if not ref.startswith("#") or not isinstance(node, Mapping):
        raise InvalidRequestError(
            f"response_format: $ref {ref!r} at {path} does not point into the schema (fix: keep every "
            "definition under the schema's own $defs)"
        )
    return node


def parse_tool_calls(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """The model's tool calls as ``{"id", "name", "arguments"}`` dicts, the arguments parsed; a custom
    tool's call as ``{"id", "type": "custom", "name", "input"}``, its free-form input as written.

    :raises ToolCallError: a call without a tool name; naming every function call whose arguments are
        not valid JSON, with the start of what the model wrote.
    """
    if nameless := [call.id for call in calls if not call.name]:
        raise ToolCallError(
            f"the model called a tool without naming it (tool call id(s) {', '.join(nameless)}); "
            "there is nothing to call. This is a fault of the service: report it to AI/ML API if it recurs"
        )
    parsed: list[dict[str, Any]] = []
    problems = []
    for call in calls:
        if call.type == "custom":
            parsed.append({"id": call.id, "type": "custom", "name": call.name, "input": call.arguments})
            continue
        try:
            arguments = json.loads(call.arguments or "{}", parse_constant=not_json)
        except ValueError as error:
            problems.append(
                f"{call.name!r} (id {call.id}): {error}; the arguments start {_start(call.arguments)}"
            )
            continue
        parsed.append({"id": call.id, "name": call.name, "arguments": arguments})
    if problems:
        raise ToolCallError(
            "the model called tools with arguments that are not valid JSON: "
            + "; ".join(problems)
            + ". Fix: describe the arguments more precisely in the tool's parameters schema, or set "
            "'strict': True in its function definition"
        )
    return parsed


def not_json(constant: str) -> Any:
    """For ``json.loads(parse_constant=...)``: refuse ``NaN`` and ``Infinity``, which JSON does not have."""
    raise ValueError(f"{constant} is not a JSON value")


def _validator_class(schema: Mapping[str, Any]) -> type[jsonschema.protocols.Validator]:
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    return validator_for(schema, default=Draft202012Validator)  # type: ignore[no-any-return]


def _start(text: str) -> str:
    """The start of a bad reply, as an error message quotes it."""
    return repr(text[:200]) + ("..." if len(text) > 200 else "")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def reask_messages(reply: str | None, error: StructuredOutputError) -> list[dict[str, Any]]:
    """The turns that ask again after an unusable JSON reply: the reply, then what was wrong with it."""
    return [
        {"role": "assistant", "content": reply or ""},
        {
            "role": "user",
            "content": (
                f"That reply cannot be used: {error}. Answer again with only the JSON, complete and "
                "exactly as the requested format asks."
            ),
        },
    ]

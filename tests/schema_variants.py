"""Instances of a JSON Schema, one variant per field: for tests that must hold on every value a
contract allows, not only on hand-written ones.

:func:`example` is one full instance: every property present, the first non-null alternative of each
``anyOf``/``oneOf``. :func:`variants` changes one field of it at a time, through every form the
schema allows there: left out (when not required), ``null`` (when allowed), an empty and a one-item
list, each ``anyOf``/``oneOf`` alternative, each enum value, an empty and a non-empty string, 0 and
a larger whole number. With ``nulls=True`` it also sets each field the schema does not allow to be
null to ``null``, which a request builder must drop or refuse.

Deterministic, with no dependency: the schemas here (``tests/contract.py``'s conversions of the
o3-mini OpenAPI document) use only ``type``, ``properties``, ``required``, ``items``, ``enum``,
``anyOf`` and ``oneOf``, and that is all this walks.

Usage::

    for label, body in variants(response_schema()):
        parse_response(200, {}, json.dumps(body).encode())  # label names the field that changed
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["allows_null", "example", "variants"]

_SCALARS: dict[str, tuple[Any, ...]] = {
    "string": ("x", ""),
    "integer": (7, 0),
    "number": (7, 0),
    "boolean": (True, False),
}


def _alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return list(schema.get("anyOf") or schema.get("oneOf") or ())


def allows_null(schema: dict[str, Any]) -> bool:
    """The schema accepts ``null`` (directly, or as one of its alternatives, or as "anything")."""
    if (alternatives := _alternatives(schema)) != []:
        return any(allows_null(alternative) for alternative in alternatives)
    kind = schema.get("type")
    return kind == "null" or (kind is None and "enum" not in schema)


def example(schema: dict[str, Any]) -> Any:
    """One full instance: every property, the first non-null alternative, the first enum value."""
    if alternatives := _alternatives(schema):
        not_null = [alternative for alternative in alternatives if alternative.get("type") != "null"]
        return example((not_null or alternatives)[0])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: example(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}))]
    if kind in _SCALARS:
        return _SCALARS[kind][0]
    return None if kind == "null" else {}


def variants(schema: dict[str, Any], *, nulls: bool = False, path: str = "$") -> Iterator[tuple[str, Any]]:
    """``(label, instance)`` pairs: :func:`example` with one field changed, labelled by its path."""
    yield f"{path} as the example", example(schema)
    yield from _changes(schema, nulls, path, null_here=False)


def _changes(
    schema: dict[str, Any], nulls: bool, path: str, *, null_here: bool = True
) -> Iterator[tuple[str, Any]]:
    if nulls and null_here and not allows_null(schema):
        yield f"{path} = null (not allowed)", None
    if alternatives := _alternatives(schema):
        for number, alternative in enumerate(alternatives):
            if alternative.get("type") == "null":
                yield f"{path} = null", None
            else:
                yield f"{path} alternative {number}", example(alternative)
                yield from _changes(alternative, nulls, path, null_here=False)
        return
    if "enum" in schema:
        for value in schema["enum"][1:]:
            yield f"{path} = {value!r}", value
        return
    kind = schema.get("type")
    if kind == "object":
        yield from _object_changes(schema, nulls, path)
    elif kind == "array":
        yield f"{path} = []", []
        for label, item in _changes(schema.get("items", {}), nulls, f"{path}[0]"):
            yield label, [item]
    elif kind in _SCALARS:
        for value in _SCALARS[kind][1:]:
            yield f"{path} = {value!r}", value


def _object_changes(schema: dict[str, Any], nulls: bool, path: str) -> Iterator[tuple[str, Any]]:
    full = example(schema)
    required = set(schema.get("required", ()))
    for name, sub in schema.get("properties", {}).items():
        if name not in required:
            yield f"{path}.{name} left out", {key: value for key, value in full.items() if key != name}
        for label, value in _changes(sub, nulls, f"{path}.{name}"):
            changed = copy.deepcopy(full)
            changed[name] = value
            yield label, changed

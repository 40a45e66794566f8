"""The o3-mini chat-completions contract, as JSON Schema validators for tests.

Source: ``o3-mini.openapi.json`` (AI/ML API's published OpenAPI 3.0 description). Located through
``$O3_CONTRACT`` if set, else ``<repo>/../shared/contract/o3-mini.openapi.json`` when it exists, else
the copy vendored in ``airflow_o3/contract/`` (so a clone on its own, as in CI, has it too).

Usage::

    from tests.contract import validate_request_body, validate_response_body

    validate_request_body(sent_json)  # AssertionError listing every violation, with its path
    validate_response_body(reply_json)

The operation used is ``POST /v1/chat/completions`` (the spec's ``/chat/completions`` copy is the same
minus the ``provider`` property). The request schema does not forbid unknown top-level keys; pass
``strict=True`` to reject keys the schema does not define (``temperature``, ``top_p``, ... which
reasoning models refuse: see ``REASONING_UNSUPPORTED_PARAMS``).

OpenAPI 3.0 to JSON Schema (Draft 2020-12):

* ``nullable: true`` on a schema with constraints -> ``anyOf: [<schema without nullable>, {"type": "null"}]``
  (``description``/``title``/``default`` stay on the outer schema).
* A schema that is only ``{"nullable": true}`` (plus annotations): inside ``anyOf``/``oneOf`` it is the
  "or null" branch -> ``{"type": "null"}`` (``stop: anyOf [string, array, {nullable}]``); anywhere else
  it means "any value, null included" -> ``{}`` (``additionalProperties: {nullable: true}`` of a tool's
  ``parameters`` and of ``response_format.json_schema.schema``).
* ``example`` keys and ``x-*`` extensions are dropped; property *names* are never touched.

Contract facts worth knowing when writing code against it (they are the schema's, not ours):
``message.content`` in the 200 response is a non-nullable string; an assistant message in a request
has no nullable ``content`` (omit it rather than sending ``null`` next to ``tool_calls``); ``n`` and
``stop`` accept ``null``; ``seed`` must be >= 1; ``max_completion_tokens`` >= 1; a stream chunk's
``finish_reason``, ``delta.role`` and ``delta.content`` are all required (see :func:`validate_stream_chunk`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

__all__ = [
    "REASONING_UNSUPPORTED_PARAMS",
    "contract_path",
    "openapi_to_json_schema",
    "request_schema",
    "response_schema",
    "stream_chunk_schema",
    "validate_request_body",
    "validate_response_body",
    "validate_stream_chunk",
]

OPERATION_PATH = "/v1/chat/completions"

#: Parameters OpenAI rejects for reasoning models (400 ``unsupported_parameter``); not in the schema.
REASONING_UNSUPPORTED_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "max_tokens",
        "parallel_tool_calls",
    }
)

# Keywords that constrain the instance; a schema with none of them accepts anything.
_CONSTRAINING = frozenset(
    {
        "type", "enum", "const", "properties", "patternProperties", "additionalProperties", "required",
        "items", "prefixItems", "contains", "anyOf", "oneOf", "allOf", "not", "$ref", "format",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength",
        "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
    }
)  # fmt: skip
_ANNOTATIONS = ("title", "description", "default", "deprecated", "readOnly", "writeOnly")
_DROPPED = frozenset({"example", "examples", "nullable", "xml", "externalDocs", "discriminator"})


VENDORED_CONTRACT = (
    Path(__file__).resolve().parent.parent / "airflow_o3" / "contract" / "o3-mini.openapi.json"
)
"""The copy shipped in the package (the product's checks derive from it), so a clone on its own (CI)
has the contract; it must equal the shared one wherever that exists (``tests/test_infrastructure.py``
checks). This module reads it with its own code, as an oracle independent of the product's."""


def shared_contract_path() -> Path:
    """``<repo>/../shared/contract/o3-mini.openapi.json``: the team's copy, next to the repository."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "contract" / "o3-mini.openapi.json"


def contract_path() -> Path:
    """The OpenAPI file: ``$O3_CONTRACT``, else the shared copy next to the repository if there is
    one, else the copy vendored in ``airflow_o3/contract/``."""
    if env := os.environ.get("O3_CONTRACT"):
        return Path(env)
    shared = shared_contract_path()
    return shared if shared.is_file() else VENDORED_CONTRACT


@functools.cache
def _openapi() -> dict[str, Any]:
    path = contract_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"o3-mini contract not found at {path}; set O3_CONTRACT to the o3-mini.openapi.json path"
        )
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def openapi_to_json_schema(schema: Any, *, _branch: bool = False) -> Any:
    """Convert one OpenAPI 3.0 schema object to JSON Schema (see the module docstring)."""
    if isinstance(schema, list):
        return [openapi_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED or key.startswith("x-"):
            continue
        if key in ("properties", "patternProperties", "$defs", "definitions"):
            out[key] = {name: openapi_to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "contains"):
            out[key] = openapi_to_json_schema(value)
        elif key in ("anyOf", "oneOf"):
            out[key] = [openapi_to_json_schema(sub, _branch=True) for sub in value]
        elif key == "allOf":
            out[key] = [openapi_to_json_schema(sub) for sub in value]
        else:
            out[key] = copy.deepcopy(value)

    if schema.get("nullable") is not True:
        return out
    annotations = {k: out.pop(k) for k in _ANNOTATIONS if k in out}
    if not (_CONSTRAINING & out.keys()):
        # ``{"nullable": true}`` alone: the null alternative of an anyOf/oneOf, else "anything".
        return {**annotations, "type": "null"} if _branch else annotations
    return {**annotations, "anyOf": [out, {"type": "null"}]}


def _operation() -> dict[str, Any]:
    operation: dict[str, Any] = _openapi()["paths"][OPERATION_PATH]["post"]
    return operation


def _finish(schema: Any) -> dict[str, Any]:
    converted = openapi_to_json_schema(schema)
    converted = {"$schema": "https://json-schema.org/draft/2020-12/schema", **converted}
    Draft202012Validator.check_schema(converted)
    return converted


@functools.cache
def _request_schema() -> dict[str, Any]:
    return _finish(_operation()["requestBody"]["content"]["application/json"]["schema"])


@functools.cache
def _response_schema() -> dict[str, Any]:
    return _finish(_operation()["responses"]["200"]["content"]["application/json"]["schema"])


@functools.cache
def _stream_chunk_schema() -> dict[str, Any]:
    return _finish(_operation()["responses"]["200"]["content"]["text/event-stream"]["schema"])


def request_schema() -> dict[str, Any]:
    """The request body schema as JSON Schema (a copy: mutate freely)."""
    return copy.deepcopy(_request_schema())


def response_schema() -> dict[str, Any]:
    """The 200 ``application/json`` response body schema as JSON Schema (a copy)."""
    return copy.deepcopy(_response_schema())


def stream_chunk_schema() -> dict[str, Any]:
    """The schema of one streamed chunk (the 200 ``text/event-stream`` schema; a copy)."""
    return copy.deepcopy(_stream_chunk_schema())


@functools.cache
def _lenient_stream_chunk_schema() -> dict[str, Any]:
    schema = stream_chunk_schema()
    choice = schema["properties"]["choices"]["items"]["properties"]
    choice["finish_reason"] = {"anyOf": [choice["finish_reason"], {"type": "null"}]}
    for alternative in choice["delta"]["anyOf"]:
        alternative.pop("required", None)
    Draft202012Validator.check_schema(schema)
    return schema


@functools.cache
def _validator(which: str) -> Draft202012Validator:
    schema = {
        "request": _request_schema,
        "response": _response_schema,
        "chunk": _stream_chunk_schema,
        "chunk-lenient": _lenient_stream_chunk_schema,
    }[which]()
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _path(error: jsonschema.ValidationError) -> str:
    out = "$"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: jsonschema.ValidationError, indent: str = "  ") -> list[str]:
    message = (
        error.message if len(error.message) <= 240 else f"{_short(error.instance)} {error.validator} failed"
    )
    lines = [f"{indent}{_path(error)}: {message}"]
    if error.context:  # anyOf/oneOf: say why each alternative failed
        by_branch: dict[int, list[jsonschema.ValidationError]] = {}
        for sub in error.context:
            by_branch.setdefault(int(sub.schema_path[0]), []).append(sub)
        fewest = min(len(subs) for subs in by_branch.values())
        for branch, subs in sorted(by_branch.items()):
            reasons = "; ".join(f"{_path(s)}: {s.message}" for s in subs[:3])
            more = f" (+{len(subs) - 3} more)" if len(subs) > 3 else ""
            closest = " <- closest" if len(subs) == fewest and len(by_branch) > 1 else ""
            lines.append(f"{indent}    {error.validator}[{branch}]: {reasons}{more}{closest}")
    return lines


def _validate(which: str, what: str, body: Any, extra_errors: list[str] | None = None) -> None:
    errors = sorted(
        _validator(which).iter_errors(body), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    lines = [line for error in errors for line in _describe(error)] + (extra_errors or [])
    if lines:
        count = len(errors) + len(extra_errors or [])
        raise AssertionError(
            f"{what} does not match the o3-mini contract ({count} error{'s' if count != 1 else ''}):\n"
            + "\n".join(lines)
        )


def validate_request_body(body: dict[str, Any], *, strict: bool = False) -> None:
    """Assert that ``body`` is a valid chat-completions request for o3-mini.

    :param strict: also reject top-level keys the schema does not define (the schema itself allows them).
    :raises AssertionError: listing every violation with its JSON path.
    """
    extra: list[str] = []
    if strict and isinstance(body, dict):
        known = _request_schema().get("properties", {}).keys()
        for key in sorted(set(body) - set(known)):
            why = " (reasoning models reject it)" if key in REASONING_UNSUPPORTED_PARAMS else ""
            extra.append(f"  $.{key}: not a parameter of the o3-mini schema{why}")
    _validate("request", "request body", body, extra)


def validate_response_body(body: dict[str, Any]) -> None:
    """Assert that ``body`` is a valid 200 chat-completion response body (non-streaming)."""
    _validate("response", "response body", body)


def validate_stream_chunk(chunk: dict[str, Any], *, null_finish_reason_ok: bool = True) -> None:
    """Assert that ``chunk`` (one parsed ``data:`` line of a stream) matches the stream schema.

    The published chunk schema requires a non-null string ``finish_reason`` in every choice and both
    ``role`` and ``content`` in every ``delta``. OpenAI-compatible streams send ``finish_reason: null``
    until the last chunk, ``role`` only in the first and ``content`` only where there is text (the
    last delta is often ``{}``), so by default those three rules are relaxed;
    ``null_finish_reason_ok=False`` checks the schema exactly as published.
    """
    _validate("chunk-lenient" if null_finish_reason_ok else "chunk", "stream chunk", chunk)

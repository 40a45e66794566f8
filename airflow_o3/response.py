"""Read what the service sent back into a :class:`Completion`, or into the right typed error."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from time import time
from typing import Any

from airflow_o3.errors import (
    REQUEST_ID_CHARACTERS,
    BadResponseError,
    HttpFailure,
    ServiceError,
    error_class_for_status,
    quotable,
)

log = logging.getLogger(__name__)

MAX_AMOUNT = 2**53
"""The largest token count or cost taken from a reply: above it a figure is a fault, not a measurement
(and a float no longer holds it exactly)."""

LATEST_CREATED = 253_402_300_799
"""The last second of the year 9999: a ``created`` timestamp after it is a fault."""


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model asks for.

    :ivar type: ``function`` (``arguments`` is the JSON text as the model wrote it) or ``custom`` (a
        custom tool's call: ``arguments`` is its free-form ``input`` text).
    """

    id: str
    name: str
    arguments: str
    type: str = "function"


@dataclass(frozen=True)
class Choice:
    """One answer of the model (there is one unless the request asked for ``n`` > 1)."""

    index: int
    text: str | None
    finish_reason: str | None
    refusal: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Completion:
    """The result of one chat completion call.

    :ivar usage: the response's usage object as the service sent it (reasoning tokens are in
        ``completion_tokens_details.reasoning_tokens``), less any figure that is no count (NaN,
        infinite, negative: ignored with a warning).
    :ivar cost_usd: the service's own cost figure for the call, when it reported one.
    :ivar credits_used: the AI/ML API credits the call used, when reported.
    :ivar from_cache: the reply was read from the response cache: nothing was paid for it this time.
    :ivar conn_id: the Airflow connection that answered (with ``fallback_conn_ids``, maybe not the
        first), or whose stored reply the cache served; ``None`` for a completion not made by a hook.
    """

    id: str
    model: str
    created: int | None
    choices: tuple[Choice, ...]
    usage: Mapping[str, Any]
    cost_usd: float | None = None
    credits_used: float | None = None
    request_id: str | None = None
    from_cache: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    conn_id: str | None = None

    @property
    def text(self) -> str | None:
        """The first choice's reply text."""
        return self.choices[0].text

    @property
    def finish_reason(self) -> str | None:
        """Why the first choice stopped: stop, length, content_filter or tool_calls."""
        return self.choices[0].finish_reason

    @property
    def refusal(self) -> str | None:
        """The first choice's refusal message, when the model refused."""
        return self.choices[0].refusal

    @property
    def tool_calls(self) -> tuple[ToolCall, ...]:
        """The first choice's tool calls."""
        return self.choices[0].tool_calls

    def usage_record(self) -> dict[str, Any]:
        """The usage object as sent, plus ``usd_spent`` and ``credits_used`` if the service reported them."""
        record = dict(self.usage)
        if self.cost_usd is not None:
            record["usd_spent"] = self.cost_usd
        if self.credits_used is not None:
            record["credits_used"] = self.credits_used
        return record


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value whatever its case: the headers of requests, urllib3 and httpx ignore case
    themselves; a plain dict (a cache entry's, a trigger event's) is searched."""
    value = headers.get(name)
    if value is not None or type(headers) is not dict:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def request_id(headers: Mapping[str, str], body: Any = None) -> str | None:
    """The service's id for the call (``x-request-id``, ``x-inference-id``, or an error body's
    ``requestId``), quotable: it goes into log lines, errors and XCom."""
    if isinstance(body, dict) and isinstance(body.get("requestId"), str):
        found: str | None = str(body["requestId"])
    else:
        found = header(headers, "x-request-id") or header(headers, "x-inference-id")
    return None if found is None else quotable(found, REQUEST_ID_CHARACTERS)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str) -> float | None:
    """Seconds in an OpenAI-style duration such as ``1s``, ``12ms`` or ``6m0s``; ``None`` if it is
    not one, or too long to be a finite number."""
    parts = _DURATION_PART.findall(value.strip())
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    return _finite_wait(sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts))


def _finite_wait(seconds: float) -> float | None:
    """``seconds``, at least 0, or ``None`` when it is NaN or infinite (no usable wait)."""
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _wait(text: str, unit: float, dated: bool) -> float | None:
    """A wait header's value in seconds: a number of ``unit`` seconds, or (when ``dated``) an HTTP date."""
    with contextlib.suppress(ValueError):
        return _finite_wait(float(text) * unit)
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        return _finite_wait(parsedate_to_datetime(text).timestamp() - time()) if dated else None
    return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the service asks to wait: ``retry-after-ms``, ``retry-after`` or ``x-ratelimit-reset-*``.

    The first header that holds a finite wait wins, as given (at least 0; the caller bounds it by its
    policy); NaN, infinite and unreadable values are skipped, so the result is never one of them.
    """
    for name, unit, dated in (("retry-after-ms", 0.001, False), ("retry-after", 1.0, True)):
        if (value := header(headers, name)) is not None and (wait := _wait(value, unit, dated)) is not None:
            return wait
    resets = [
        seconds
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        if (value := header(headers, name)) is not None and (seconds := duration_seconds(value)) is not None
    ]
    return max(resets) if resets else None


def _titled(title: Any, message: Any) -> str:
    return str(message) if str(title) == str(message) else f"{title}: {message}"


def _service_message(body: Any, text: str) -> str:
    """The service's message from any of its three error-body shapes, or the raw text."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            if body.get("title"):
                return _titled(body["title"], error["message"])
            code = error.get("code") or error.get("type")
            return f"{error['message']} ({code})" if code else str(error["message"])
        if body.get("message"):
            message = body["message"]
            if isinstance(message, list):
                message = "; ".join(map(str, message))
            return _titled(body["title"], message) if body.get("title") else str(message)
        if isinstance(error, str):
            return error
        if body.get("title"):
            return str(body["title"])
    return text.strip()[:500] or "(empty body)"


def error_for(status: int, headers: Mapping[str, str], content: bytes) -> ServiceError:
    """The typed error for a non-2xx answer."""
    text = content.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    failure = HttpFailure(
        status=status,
        message=_service_message(body, text),
        request_id=request_id(headers, body),
        retry_after=retry_after(headers),
    )
    return error_class_for_status(status)(failure)


def _bad(status: int, headers: Mapping[str, str], message: str) -> BadResponseError:
    return BadResponseError(HttpFailure(status=status, message=message, request_id=request_id(headers)))


def json_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: for optional parts of a reply."""
    return value if isinstance(value, dict) else {}


def amount(value: Any) -> int | float | None:
    """``value`` if it is a finite number from 0 to :data:`MAX_AMOUNT` (a token count, a cost), else
    ``None``; ``True`` and ``False`` are not numbers here."""
    # an int first, with no more checks: a figure is read a dozen times per reply
    if type(value) is not int and (not _is_number(value) or not math.isfinite(value)):
        return None
    return value if 0 <= value <= MAX_AMOUNT else None


def _shown(value: Any) -> str:
    """A value the service sent, fit for a log line: no bearer token, at most 100 characters."""
    return quotable(repr(value), 100)


def _figure(*candidates: tuple[str, Any]) -> float | None:
    """The first of the reported ``(where, value)`` figures (a JSON number, or header text) that is an
    amount; a figure that is there but is none (NaN, infinite, negative, text) is ignored with a warning."""
    for where, value in candidates:
        if value is None:
            continue
        with contextlib.suppress(ValueError):
            if (number := amount(float(value) if isinstance(value, str) else value)) is not None:
                return float(number)
        log.warning("The reply's %s is %s, which is not an amount; it is ignored", where, _shown(value))
    return None


def _checked_counts(node: Mapping[str, Any], path: str) -> dict[str, Any]:
    """``node`` without the figures that are no amount: NaN, infinite, negative or huge numbers,
    and anything but a number or null under a ``*_tokens`` name. Each one dropped is logged."""
    checked: dict[str, Any] = {}
    for name, value in node.items():
        if type(value) is int and 0 <= value <= MAX_AMOUNT:  # nearly every figure: no more to check
            checked[name] = value
            continue
        if isinstance(value, Mapping):
            checked[name] = _checked_counts(value, f"{path}.{name}")
            continue
        if value is None or amount(value) is not None or not (_is_number(value) or name.endswith("_tokens")):
            checked[name] = value
        else:
            log.warning(
                "The reply's %s.%s is %s, which is not a count; it is ignored", path, name, _shown(value)
            )
    return checked


def _created(value: Any) -> int | None:
    """The ``created`` timestamp as whole seconds; one that is no time (NaN, negative, after the year
    9999) is ignored with a warning."""
    if value is None:
        return None
    if (number := amount(value)) is None or number > LATEST_CREATED:
        log.warning("The reply's created is %s, which is not a time; it is ignored", _shown(value))
        return None
    return int(number)


def index_number(value: Any) -> int | None:
    """``value`` as an index (of a choice, of a tool call) if it is a whole number from 0, else
    ``None`` (NaN, infinite, negative, 1.5, text)."""
    number = amount(value)
    return None if number is None or number != int(number) else int(number)


def _index(position: int, data: Mapping[str, Any]) -> int:
    """A choice's ``index``: its position when the reply leaves it out."""
    value = data.get("index")
    if value is None:
        return position
    if (index := index_number(value)) is None:
        raise ValueError(f"choices[{position}].index is {value!r}, not a whole number from 0")
    return index


def _optional_text(message: Mapping[str, Any], name: str, position: int) -> str | None:
    value = message.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"choices[{position}].message.{name} is {type(value).__name__}, not text")
    return value


def _tool_call(where: str, call: Any) -> ToolCall:
    """One entry of ``message.tool_calls``: a ``function`` call, or a ``custom`` tool's call (a call
    without a name keeps ``""``: reading the reply's calls refuses it)."""
    data = json_object(call)
    kind = data.get("type") or "function"
    if kind not in ("function", "custom"):
        raise ValueError(f"{where}.type is {kind!r}, not 'function' or 'custom'")
    details = json_object(data.get(kind))
    name = details.get("name")
    text = details.get("arguments" if kind == "function" else "input")
    return ToolCall(
        id=str(data.get("id") or ""),
        name=name if isinstance(name, str) else "",
        arguments=text if isinstance(text, str) else "",
        type=kind,
    )


def _choice(position: int, data: Any) -> Choice:
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise ValueError(f"choices[{position}] has no message object")
    message = data["message"]
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ValueError(f"choices[{position}].message.tool_calls is {type(calls).__name__}, not a list")
    return Choice(
        index=_index(position, data),
        text=_optional_text(message, "content", position),
        finish_reason=None if data.get("finish_reason") is None else str(data["finish_reason"]),
        refusal=_optional_text(message, "refusal", position),
        tool_calls=tuple(
            _tool_call(f"choices[{position}].message.tool_calls[{number}]", call)
            for number, call in enumerate(calls)
        ),
    )


def _checked_body(body: dict[str, Any], usage: dict[str, Any], created: int | None) -> dict[str, Any]:
    """``body`` with the figures :func:`completion_from_body` ignored left out, so what is kept (a
    cache entry, a trigger's event) holds no NaN or infinity."""
    checked = {**body, "created": created} if "created" in body else dict(body)
    if isinstance(body.get("usage"), Mapping):
        checked["usage"] = usage
    meta = body.get("meta")
    if isinstance(meta, Mapping) and isinstance(meta.get("usage"), Mapping):
        figures = {
            name: value
            for name, value in meta["usage"].items()
            if not _is_number(value) or amount(value) is not None
        }
        checked["meta"] = {**meta, "usage": figures}
    return checked


def completion_from_body(
    body: Any,
    headers: Mapping[str, str],
    *,
    status: int = 200,
    from_cache: bool = False,
    conn_id: str | None = None,
) -> Completion:
    """A :class:`Completion` from a decoded ``chat.completion`` body (also used for cache entries).

    Every reply the contract allows is read; a figure that is no amount (a NaN, infinite or
    negative token count, cost or ``created``) is ignored with a warning, since the text is paid for.

    :raises BadResponseError: the body is no completion: no choices, a choice without a message, a
        choice ``index`` that is not a whole number from 0, content that is not text.
    """
    if not isinstance(body, dict):
        raise _bad(status, headers, f"the reply is JSON but not an object: {_start(body)}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _bad(status, headers, f"the reply has no choices: {_start(body)}")
    try:
        parsed = tuple(_choice(position, data) for position, data in enumerate(choices))
    except (ValueError, TypeError, AttributeError) as error:
        raise _bad(status, headers, f"the reply breaks the contract: {error}") from None
    meta_usage = json_object(json_object(body.get("meta")).get("usage"))
    usage = _checked_counts(json_object(body.get("usage")), "usage")
    created = _created(body.get("created"))
    return Completion(
        id=quotable(str(body.get("id", "")), REQUEST_ID_CHARACTERS),
        model=quotable(str(body.get("model", "")), REQUEST_ID_CHARACTERS),
        created=created,
        choices=parsed,
        usage=usage,
        cost_usd=_figure(
            ("meta.usage.usd_spent", meta_usage.get("usd_spent")),
            ("x-aimlapi-usd-spent header", header(headers, "x-aimlapi-usd-spent")),
        ),
        credits_used=_figure(
            ("meta.usage.credits_used", meta_usage.get("credits_used")),
            ("x-aimlapi-credits-used header", header(headers, "x-aimlapi-credits-used")),
        ),
        request_id=request_id(headers),
        from_cache=from_cache,
        raw=_checked_body(body, usage, created),
        conn_id=conn_id,
    )


def _start(body: Any) -> str:
    """The start of a JSON value for a message (NaN and infinity written as Python writes them)."""
    return json.dumps(body)[:200]


def parse_response(
    status: int, headers: Mapping[str, str], content: bytes, *, conn_id: str | None = None
) -> Completion:
    """A :class:`Completion` from the HTTP answer, or the typed error it means.

    :param conn_id: the Airflow connection the answer came through, for :attr:`Completion.conn_id`.

    :raises ServiceError: a subclass chosen by the status; a 2xx that is not a contract-shaped
        ``chat.completion`` is a :class:`BadResponseError`.
    """
    if not 200 <= status < 300:
        raise error_for(status, headers, content)
    try:
        body = json.loads(content)
    except ValueError:
        snippet = content[:200].decode("utf-8", "replace")
        raise _bad(status, headers, f"the reply is not JSON: {snippet!r}") from None
    return completion_from_body(body, headers, status=status, conn_id=conn_id)


def record_headers(completion: Completion) -> dict[str, str]:
    """The headers that :func:`completion_from_body` needs besides the body to rebuild ``completion``:
    its cost, credits and request id (for a cache entry, or a trigger's event)."""
    sent = {
        "x-aimlapi-usd-spent": completion.cost_usd,
        "x-aimlapi-credits-used": completion.credits_used,
        "x-request-id": completion.request_id or None,
    }
    return {name: str(value) for name, value in sent.items() if value is not None}


def usage_over(completions: Sequence[Completion]) -> dict[str, Any]:
    """The usage record of one task's calls, added up: every billed attempt counts.

    Token counts (nested details included), ``usd_spent`` and ``credits_used`` are summed over the
    completions; ``attempts`` says how many there were. A single completion gives its own
    :meth:`Completion.usage_record` plus ``attempts: 1``.
    """
    total: dict[str, Any] = {}
    for completion in completions:
        _add(total, completion.usage_record())
    total["attempts"] = len(completions)
    return total


def _add(total: dict[str, Any], record: Mapping[str, Any]) -> None:
    """Add ``record`` into ``total``: numbers are summed, objects added field by field (``null`` in
    one and an object in another, as the contract allows for the details, gives the object)."""
    for name, value in record.items():
        current = total.get(name)
        if isinstance(value, Mapping):
            if not isinstance(current, dict):
                current = total[name] = {}
            _add(current, value)
        elif amount(value) is not None:
            added = (current if amount(current) is not None else 0) + value
            total[name] = round(added, 9) if isinstance(added, float) else added
        elif name not in total and not _is_number(value):
            total[name] = value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

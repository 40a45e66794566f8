"""Read what the service sent back into a :class:`Completion`, or into the right typed error."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from time import time
from typing import Any

from airflow_o3.errors import BadResponseError, HttpFailure, ServiceError, error_class_for_status


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asks for; ``arguments`` is the JSON text as the model wrote it."""

    id: str
    name: str
    arguments: str


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
        ``completion_tokens_details.reasoning_tokens``).
    :ivar cost_usd: the service's own cost figure for the call, when it reported one.
    :ivar credits_used: the AI/ML API credits the call used, when reported.
    :ivar from_cache: the reply was read from the response cache: nothing was paid for it this time.
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
    """A header's value whatever its case (plain dicts from a cache entry are not case-insensitive)."""
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def _request_id(headers: Mapping[str, str], body: Any = None) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("requestId"), str):
        return str(body["requestId"])
    return header(headers, "x-request-id") or header(headers, "x-inference-id")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str) -> float | None:
    """Seconds in an OpenAI-style duration such as ``1s``, ``12ms`` or ``6m0s``."""
    parts = _DURATION_PART.findall(value.strip())
    if not parts or "".join(n + u for n, u in parts) != value.strip():
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the service asks to wait: ``retry-after-ms``, ``retry-after`` or ``x-ratelimit-reset-*``."""
    if (value := header(headers, "retry-after-ms")) is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    if (value := header(headers, "retry-after")) is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time())
            except (TypeError, ValueError):
                pass
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
        request_id=_request_id(headers, body),
        retry_after=retry_after(headers),
    )
    return error_class_for_status(status)(failure)


def _bad(status: int, headers: Mapping[str, str], message: str) -> BadResponseError:
    return BadResponseError(HttpFailure(status=status, message=message, request_id=_request_id(headers)))


def json_object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: for optional parts of a reply."""
    return value if isinstance(value, dict) else {}


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _choice(position: int, data: Any) -> Choice:
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise ValueError(f"choices[{position}] has no message object")
    message = data["message"]
    calls = tuple(
        ToolCall(
            id=str(call.get("id", "")),
            name=str(call.get("function", {}).get("name", "")),
            arguments=str(call.get("function", {}).get("arguments", "")),
        )
        for call in message.get("tool_calls") or ()
        if isinstance(call, dict)
    )
    return Choice(
        index=int(data.get("index", position)),
        text=message.get("content"),
        finish_reason=data.get("finish_reason"),
        refusal=message.get("refusal"),
        tool_calls=calls,
    )


def completion_from_body(
    body: Any, headers: Mapping[str, str], *, status: int = 200, from_cache: bool = False
) -> Completion:
    """A :class:`Completion` from a decoded ``chat.completion`` body (also used for cache entries)."""
    if not isinstance(body, dict):
        raise _bad(status, headers, f"the reply is JSON but not an object: {json.dumps(body)[:200]}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _bad(status, headers, f"the reply has no choices: {json.dumps(body)[:200]}")
    try:
        parsed = tuple(_choice(position, data) for position, data in enumerate(choices))
    except (ValueError, TypeError, AttributeError) as error:
        raise _bad(status, headers, f"the reply breaks the contract: {error}") from None
    meta_usage = json_object(json_object(body.get("meta")).get("usage"))
    usage = json_object(body.get("usage"))
    return Completion(
        id=str(body.get("id", "")),
        model=str(body.get("model", "")),
        created=int(body["created"]) if isinstance(body.get("created"), int | float) else None,
        choices=parsed,
        usage=usage,
        cost_usd=_float(meta_usage.get("usd_spent", header(headers, "x-aimlapi-usd-spent"))),
        credits_used=_float(meta_usage.get("credits_used", header(headers, "x-aimlapi-credits-used"))),
        request_id=_request_id(headers),
        from_cache=from_cache,
        raw=body,
    )


def parse_response(status: int, headers: Mapping[str, str], content: bytes) -> Completion:
    """A :class:`Completion` from the HTTP answer, or the typed error it means.

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
    return completion_from_body(body, headers, status=status)


def record_headers(completion: Completion) -> dict[str, str]:
    """The headers that :func:`completion_from_body` needs besides the body to rebuild ``completion``:
    its cost, credits and request id (for a cache entry, or a trigger's event)."""
    headers = {}
    if completion.cost_usd is not None:
        headers["x-aimlapi-usd-spent"] = str(completion.cost_usd)
    if completion.credits_used is not None:
        headers["x-aimlapi-credits-used"] = str(completion.credits_used)
    if completion.request_id:
        headers["x-request-id"] = completion.request_id
    return headers


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
    for name, value in record.items():
        if isinstance(value, Mapping):
            _add(total.setdefault(name, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            added = total.get(name, 0) + value
            total[name] = round(added, 9) if isinstance(added, float) else added
        elif name not in total:
            total[name] = value

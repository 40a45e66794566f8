"""Scripted answers for :meth:`StandInServer.script <airflow_o3.testing.StandInServer.script>`, one
per chat request, so a script reads like the failure story it tests (docs/testing.md, "Scripted faults")::

    srv.script(RateLimited(retry_after=0.1), HttpError(503), Reply("done"))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

ErrorShape = Literal["openai", "aimlapi", "problem", "text"]

RATE_LIMIT_MESSAGE = "Rate limit reached for requests. Please try again later."


@dataclass(frozen=True)
class HttpError:
    """Answer with an HTTP error in one of the body shapes the service is known to send.

    ``shape`` picks the body: ``"openai"`` ``{"error": {message, type, param, code}}``,
    ``"aimlapi"`` ``{message, path, requestId, statusCode, timestamp}``, ``"problem"``
    (``application/problem+json``: ``{title, status, instance, message, requestId, timestamp,
    error{name, message}}``) or ``"text"`` (the message as ``text/plain``). ``message`` defaults to
    the status phrase; ``param`` and ``code`` fill the OpenAI shape's fields (e.g. ``"temperature"``,
    ``"unsupported_parameter"``).
    ``headers`` are added to (and override) the server's own, which always include ``x-request-id``.
    """

    status: int
    message: str | None = None
    shape: ErrorShape = "openai"
    headers: dict[str, str] = field(default_factory=dict)
    param: str | None = None
    code: str | None = None


def RateLimited(
    retry_after: float | None = 1.0, retry_after_ms: bool = False, reset_header: str | None = None
) -> HttpError:
    """Answer 429 in the OpenAI shape with rate-limit headers: an :class:`HttpError` with these hints.

    ``retry_after`` (seconds, may be fractional) is sent as ``Retry-After``; ``None`` sends no
    retry hint at all. ``retry_after_ms=True`` also sends ``retry-after-ms``. ``reset_header``, if
    given, is sent verbatim as ``x-ratelimit-reset-requests`` (OpenAI durations such as ``"20ms"``).
    """
    hints = {}
    if retry_after is not None:
        hints["Retry-After"] = f"{retry_after:.3f}".rstrip("0").rstrip(".")
        if retry_after_ms:
            hints["retry-after-ms"] = str(math.ceil(retry_after * 1000))
    if reset_header is not None:
        hints["x-ratelimit-reset-requests"] = reset_header
    return HttpError(429, RATE_LIMIT_MESSAGE, headers=hints, code="rate_limit_exceeded")


@dataclass(frozen=True)
class ConnectionReset:
    """Read the request, then reset the TCP connection (RST, no response at all)."""


@dataclass(frozen=True)
class Stall:
    """Wait ``seconds`` before answering normally: long enough and the client's read timeout fires.

    If the server stops meanwhile, the connection is closed unanswered, so teardown never hangs.
    """

    seconds: float


@dataclass(frozen=True)
class NonJson:
    """Answer with a body that is not JSON (a proxy's HTML page, say), by default under a 200."""

    status: int = 200
    body: str = "<html>bad gateway</html>"
    content_type: str = "text/html"


@dataclass(frozen=True)
class Body:
    """Answer with any JSON body, e.g. a 200 without ``choices`` or a legacy 201 completion."""

    status: int = 200
    json: Any = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """Answer with a well-formed completion (or stream) carrying exactly these fields.

    ``content`` may be ``""`` or ``None``; ``finish_reason`` is one of ``stop``, ``length``,
    ``content_filter``, ``tool_calls``; ``refusal`` fills ``message.refusal``; ``tool_calls`` is a
    list in contract shape (``[{"id", "type": "function", "function": {"name", "arguments"}}]``,
    ``arguments`` a string that need not be valid JSON). ``usage`` replaces the computed usage
    object verbatim; cost (``meta.usage`` and the ``x-aimlapi-*`` headers) is priced from it.
    """

    content: str | None = None
    finish_reason: str = "stop"
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class StreamCut:
    """Break the answer off midway without an error.

    For a streaming request: send the role chunk and ``after_chunks`` content chunks, then close
    the connection without ``finish_reason``, usage or ``data: [DONE]``. For a non-streaming request:
    send the headers and half of the body, then close (the client sees an incomplete read).
    """

    after_chunks: int = 2


ScriptItem = HttpError | ConnectionReset | Stall | NonJson | Body | Reply | StreamCut
"""Anything :meth:`StandInServer.script` accepts."""

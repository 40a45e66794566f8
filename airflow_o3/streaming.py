"""Streamed replies: server-sent events in, one :class:`~airflow_o3.response.Completion` out.

The chunks are put back into the body a plain call returns, read by the same
:func:`~airflow_o3.response.completion_from_body`, so a streamed completion (and its XCom values) is
the same as a plain one. A stream that ends before ``data: [DONE]`` is an error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_o3.errors import (
    BadResponseError,
    ConnectError,
    HttpFailure,
    RequestTimeoutError,
    ServiceError,
    StreamCutError,
)
from airflow_o3.response import (
    Completion,
    completion_from_body,
    error_for,
    header,
    index_number,
    json_object,
)

OnText = Callable[[int, str], None]
"""Called with (choice index, text) for each piece of reply text as it arrives."""

DONE = "[DONE]"


class NoProgress(Exception):
    """No ``data`` line arrived for longer than the idle limit: only comments (keep-alives) or
    other fields, which do not bring the reply any closer."""


def sse_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a stream that arrives in pieces of any size, without their ``\\n``."""
    pending = b""
    for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        yield from lines
    if pending:
        yield pending


def sse_data(lines: Iterable[bytes | str], *, idle_timeout: float | None = None) -> Iterator[str]:
    """The ``data`` of each server-sent event, from the stream's lines (without line endings).

    Several ``data:`` lines of one event are joined with newlines; comments and the ``event``,
    ``id`` and ``retry`` fields are skipped. An event the stream ends in the middle of is dropped
    (as the SSE standard says), except a final ``[DONE]``.

    :param idle_timeout: seconds a stream may go without a ``data`` line; comments such as
        ``: keep-alive`` do not count as progress.
    :raises NoProgress: ``idle_timeout`` passed with no ``data`` line.
    """
    pending: list[str] = []
    progress = time.monotonic()
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        name, _, value = line.partition(":")
        if name == "data":
            pending.append(value.removeprefix(" "))
            progress = time.monotonic()
        elif idle_timeout is not None and time.monotonic() - progress > idle_timeout:
            raise NoProgress(f"no data in {idle_timeout:g}s, only comments such as keep-alives")
        elif not line and pending:
            yield "\n".join(pending)
            pending = []
    if pending == [DONE]:
        yield DONE


@dataclass
class _ChoiceState:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    saw_content: bool = False

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) if self.saw_content else None,
            "refusal": "".join(self.refusal) or None,
        }
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        return message


class StreamAssembler:
    """Collects a streamed chat completion, chunk by chunk, into a :class:`Completion`.

    :param status: the HTTP status of the stream's response (2xx).
    :param headers: the response headers (request id; the cost headers are not sent on streams).
    :param on_text: called with (choice index, text) for each piece of reply text as it arrives.
    """

    def __init__(self, status: int, headers: Mapping[str, str], on_text: OnText | None = None) -> None:
        self.status = status
        self.headers = headers
        self.on_text = on_text
        self.chunks = 0
        self.characters = 0
        self.done = False
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _ChoiceState] = {}

    def feed(self, data: str) -> None:
        """Take the ``data`` of one event: a JSON chunk, or ``[DONE]``.

        :raises ServiceError: the event is not a chunk, or it carries the service's error.
        """
        if data.strip() == DONE:
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise self.interrupted(f"an event is not a JSON object: {data[:200]!r}", broken=True)
        if chunk.get("error"):
            error = error_for(_error_status(chunk["error"]), self.headers, data.encode())
            raise self.interrupted(str(error), error=error)
        self.chunks += 1
        for name in ("id", "model", "created", "system_fingerprint"):  # the first chunk's
            if name in chunk:
                self._head.setdefault(name, chunk[name])
        for name in ("usage", "meta"):  # the last chunk's
            if isinstance(chunk.get(name), dict):
                self._head[name] = chunk[name]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._take(choice)

    def _take(self, choice: Mapping[str, Any]) -> None:
        index = self._index(choice.get("index"), "a choice's index")
        state = self._choices.setdefault(index, _ChoiceState())
        delta = json_object(choice.get("delta"))
        if isinstance(delta.get("content"), str):
            state.saw_content = True
            if delta["content"]:
                state.content.append(delta["content"])
                self.characters += len(delta["content"])
                if self.on_text is not None:
                    self.on_text(index, delta["content"])
        if isinstance(delta.get("refusal"), str) and delta["refusal"]:
            state.refusal.append(delta["refusal"])
            self.characters += len(delta["refusal"])
        for position, part in enumerate(delta.get("tool_calls") or ()):
            self._take_tool_call(state, position, part)
        if choice.get("finish_reason"):
            state.finish_reason = str(choice["finish_reason"])

    def _take_tool_call(self, state: _ChoiceState, position: int, part: Any) -> None:
        if not isinstance(part, dict):
            return
        call = state.tool_calls.setdefault(
            self._index(part.get("index"), "a tool call's index", default=position),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if part.get("id"):
            call["id"] = str(part["id"])
        function = json_object(part.get("function"))
        if function.get("name"):
            call["function"]["name"] = str(function["name"])
        if function.get("arguments"):
            call["function"]["arguments"] += str(function["arguments"])
            self.characters += len(str(function["arguments"]))

    def _index(self, value: Any, what: str, default: int = 0) -> int:
        """A chunk's choice or tool-call index (``default`` when left out); any other than a whole
        number from 0 is a :class:`BadResponseError`: the pieces of the reply cannot be put together."""
        if value is None:
            return default
        if (index := index_number(value)) is None:
            raise BadResponseError(self._failure(f"the stream breaks the contract: {what} is {value!r}"))
        return index

    def body(self) -> dict[str, Any]:
        """The ``chat.completion`` body the stream adds up to (what a plain call would return)."""
        return {
            **self._head,
            "object": "chat.completion",
            "choices": [
                {"index": index, "message": state.message(), "finish_reason": state.finish_reason}
                for index, state in sorted(self._choices.items())
            ],
        }

    def completion(self) -> Completion:
        """The finished completion; a :class:`ServiceError` before ``[DONE]`` (:meth:`interrupted`) or
        when what arrived is no completion."""
        if not self.done:
            raise self.interrupted("the stream ended before data: [DONE]")
        return completion_from_body(self.body(), self.headers, status=self.status)

    def interrupted(
        self,
        reason: str,
        *,
        timed_out: bool = False,
        broken: bool = False,
        error: ServiceError | None = None,
    ) -> ServiceError:
        """The error for a stream that stopped early, by how much of the reply had arrived.

        Before any reply text: the service's own error, else a retryable connection or timeout
        error, since asking again loses nothing. After some text: a :class:`StreamCutError` naming
        how much arrived, which is not retried within the call, so no reply is half used.

        :param reason: what happened, for the message.
        :param timed_out: no byte arrived within the read timeout.
        :param broken: the service sent something that is not a chunk.
        :param error: the error the service sent inside the stream.
        """
        if self.characters:
            return StreamCutError(
                self._failure(
                    f"the streamed reply broke off before data: [DONE] after {self.chunks} chunk(s) and "
                    f"{self.characters} character(s) of reply ({reason}); the partial reply is not used"
                )
            )
        if error is not None:
            return error
        if broken:
            return BadResponseError(self._failure(f"the stream breaks the contract: {reason}"))
        kind = RequestTimeoutError if timed_out else ConnectError
        return kind(self._failure(f"the stream broke off before any reply text arrived ({reason})"))

    def _failure(self, message: str) -> HttpFailure:
        request_id = header(self.headers, "x-request-id") or header(self.headers, "x-inference-id")
        return HttpFailure(status=self.status, message=message, request_id=request_id)


def _error_status(error: Any) -> int:
    """The HTTP status an error event stands for: its numeric code, else 500 (a server failure)."""
    code = str(json_object(error).get("code")).strip()
    status = int(code) if code.isdecimal() and len(code) == 3 else 500  # an HTTP status has 3 digits
    return status if 400 <= status < 600 else 500


class LineLog:
    """Writes streamed text to a log one whole line at a time, so a long reply shows progress.

    Fits :data:`OnText`: each choice's text is gathered on its own, so ``n`` answers never mix.

    :param write: called with (choice index, line) for each line, without its newline.
    :param max_line: a line longer than this many characters is written in pieces of that size, so
        even a reply without newlines (a long JSON value) shows up while it is written.
    """

    def __init__(self, write: Callable[[int, str], None], max_line: int = 500) -> None:
        self._write = write
        self._max_line = max_line
        self._pending: dict[int, str] = {}

    def add(self, index: int, text: str) -> None:
        """Take a piece of choice ``index``'s text; write every line it completes."""
        *lines, rest = (self._pending.get(index, "") + text).split("\n")
        for line in lines:
            self._write(index, line)
        while len(rest) >= self._max_line:
            self._write(index, rest[: self._max_line])
            rest = rest[self._max_line :]
        self._pending[index] = rest

    def close(self) -> None:
        """Write what is left of each choice's last line."""
        for index, rest in sorted(self._pending.items()):
            if rest:
                self._write(index, rest)
        self._pending.clear()

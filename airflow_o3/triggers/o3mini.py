"""The trigger of a deferred ``O3MiniOperator``: the call waits in the triggerer, not in a worker slot.

A reasoning call can think for minutes. With ``deferrable=True`` the worker checks the request, hands
it to this trigger and frees its slot; the triggerer sends it over async httpx with the same retry
policy, and the task resumes in ``execute_complete`` with the reply, or with the same typed error
(and the same message) a call in the worker would have raised. The trigger's serialized arguments
hold no secret: it reads the API key from the connection when it runs.

This module is imported by the triggerer; httpx and the hook are imported only when a trigger runs.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_o3 import errors
from airflow_o3.errors import HttpFailure, O3Error, ServiceError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from airflow_o3.response import Completion


class O3MiniTrigger(BaseTrigger):
    """Send one checked chat completion request from the triggerer; fire once with the reply or the error.

    :param conn_id: the ``aimlapi`` connection; its key is read when the trigger runs, never stored.
    :param body: the request body, as checked by the operator (model, messages, parameters).
    :param client_request_id: sent as ``X-Client-Request-Id``, to trace the call at the service.
    :param retry: retry settings overriding the connection's, as a dict of ``RetryPolicy`` fields.
    :param timeout: read timeout in seconds, overriding the connection's.
    """

    def __init__(
        self,
        *,
        conn_id: str,
        body: Mapping[str, Any],
        client_request_id: str | None = None,
        retry: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is not annotated
        self.conn_id = conn_id
        self.body = dict(body)
        self.client_request_id = client_request_id
        self.retry = dict(retry) if retry else None
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "body": self.body,
                "client_request_id": self.client_request_id,
                "retry": self.retry,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_o3.hooks.o3mini import O3MiniHook, PreparedCall

        hook = O3MiniHook(conn_id=self.conn_id, retry=self.retry, timeout=self.timeout)
        try:
            settings = await hook.aget_settings()
            prepared = PreparedCall(settings.chat_url, self.body, self.client_request_id)
            async with hook.async_client() as client:
                completion = await hook.asend(prepared, client)
        except O3Error as error:
            yield TriggerEvent(error_event(error))
            return
        yield TriggerEvent(completion_event(completion))


def completion_event(completion: Completion) -> dict[str, Any]:
    """The event for a reply: its body and the headers that carry its cost and request id."""
    from airflow_o3.response import record_headers

    return {"status": "success", "response": dict(completion.raw), "headers": record_headers(completion)}


def error_event(error: O3Error) -> dict[str, Any]:
    """The event for an error: enough to raise the same typed error, with the same message, in the worker."""
    event: dict[str, Any] = {"status": "error", "error": type(error).__name__}
    if isinstance(error, ServiceError):
        event.update(failure=asdict(error.failure), attempts=error.attempts, elapsed=error.elapsed)
        event["conn_id"] = error.conn_id
    else:
        event["message"] = str(error)
    return event


def completion_from_event(event: Mapping[str, Any]) -> Completion:
    """The reply the trigger received.

    :raises O3Error: the typed error the trigger met (a ``ServiceError`` subclass for the service's
        answers), with the message a call in the worker would have given.
    """
    from airflow_o3.response import completion_from_body

    if event.get("status") == "success":
        return completion_from_body(event["response"], event["headers"])
    raise error_from_event(event)


def error_from_event(event: Mapping[str, Any]) -> O3Error:
    """The typed error an error event describes."""
    named = getattr(errors, str(event.get("error")), None)
    kind: type[O3Error] = named if isinstance(named, type) and issubclass(named, O3Error) else O3Error
    if issubclass(kind, ServiceError) and isinstance(event.get("failure"), dict):
        return kind(
            HttpFailure(**event["failure"]),
            attempts=event.get("attempts"),
            elapsed=event.get("elapsed"),
            conn_id=event.get("conn_id"),
        )
    return kind(str(event.get("message") or f"the trigger failed with {event.get('error')}"))

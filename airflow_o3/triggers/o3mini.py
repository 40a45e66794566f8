"""The trigger of a deferred ``O3MiniOperator``: the call waits in the triggerer, not in a worker slot.

The task resumes in ``execute_complete`` with the reply, or with the same typed error (and message) a
call in the worker would have raised. With the response cache on, the hook's ``asend`` stores the
reply as soon as it arrives, so a trigger that runs again (the triggerer restarted) does not pay again.

The request runs on an event loop of its own, in a thread of the triggerer process: the triggerer's
shutdown cancels every task on its own loop at once, and a request there would be cut off unanswered
after it was paid for. A cancelled trigger waits a bounded ``grace_period`` for its reply, stores it,
then lets the cancellation through. The hook, httpx and the cache are imported in a thread, so that
nothing blocks the triggerer's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_o3 import errors
from airflow_o3.deprecations import renamed_argument
from airflow_o3.errors import HttpFailure, O3Error, ServiceError

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence

    import httpx

    from airflow_o3.cache import ResponseCache
    from airflow_o3.hooks.o3mini import O3MiniHook, PreparedCall
    from airflow_o3.response import Completion

T = TypeVar("T")


class O3MiniTrigger(BaseTrigger):
    """Send one checked chat completion request from the triggerer; fire once with the reply or the error.

    :param conn_id: the ``aimlapi`` connection; its key is read when the trigger runs, never stored.
    :param body: the request body, as checked by the operator (model, messages, parameters).
    :param client_request_id: sent as ``X-Client-Request-Id``, to trace the call at the service.
    :param request_retry: HTTP retry settings overriding the connection's, as a dict of
        :class:`~airflow_o3.retry.RequestRetry` fields.
    :param read_timeout: read timeout in seconds, overriding the connection's.
    :param fallback_conn_ids: connections tried in turn when ``conn_id`` fails for good with 401, 403
        or a retryable error (see :class:`~airflow_o3.hooks.o3mini.O3MiniHook`).
    :param retry: the old name of ``request_retry`` (a trigger serialized by an older release).
    :param timeout: the old name of ``read_timeout``.
    :param cache: the response cache's settings (``mode``, ``path``, ``grace_period``), as a dict;
        ``None`` for no cache.
    :param cache_key: the request's cache entry, as the operator's hook computed it (a digest of the
        connection's fingerprint and the body: it holds no secret).
    """

    def __init__(
        self,
        *,
        conn_id: str,
        body: Mapping[str, Any],
        client_request_id: str | None = None,
        request_retry: Mapping[str, Any] | None = None,
        read_timeout: float | None = None,
        cache: Mapping[str, Any] | None = None,
        cache_key: str | None = None,
        fallback_conn_ids: Sequence[str] = (),
        retry: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is not annotated
        self.conn_id = conn_id
        self.body = dict(body)
        self.client_request_id = client_request_id
        where = "O3MiniTrigger"
        request_retry = renamed_argument(request_retry, retry, "retry", "request_retry", where)
        self.request_retry = dict(request_retry) if request_retry else None
        self.read_timeout = renamed_argument(read_timeout, timeout, "timeout", "read_timeout", where)
        self.cache = dict(cache) if cache else None
        self.cache_key = cache_key
        self.fallback_conn_ids = list(fallback_conn_ids)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """What the triggerer stores to re-create the trigger: no secret, only names, the body and
        the settings; each argument by its new name."""
        import inspect

        from airflow_o3.call import RENAMED_ARGUMENTS

        names = inspect.signature(type(self)).parameters.keys() - RENAMED_ARGUMENTS.keys()
        arguments = {name: getattr(self, name) for name in sorted(names)}
        return f"{type(self).__module__}.{type(self).__qualname__}", arguments

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Answer from the cache, or send the request (on a loop of its own); yield its reply or its
        typed error."""
        try:
            hook, cache = await asyncio.to_thread(self._hook_and_cache)
            from airflow_o3.hooks.o3mini import PreparedCall  # imported by _hook_and_cache

            settings = await hook.aget_settings()
            prepared = PreparedCall(settings.chat_url, self.body, self.client_request_id)
            completion = await self._send(hook, prepared, cache)
            keys = await asyncio.to_thread(hook.cache_keys, prepared, self.cache_key) if cache else {}
        except O3Error as error:
            yield TriggerEvent(error_event(error))
            return
        # the cache entry of the connection that answered (or whose stored reply was served)
        yield TriggerEvent(completion_event(completion, keys.get(completion.conn_id or "")))

    def _hook_and_cache(self) -> tuple[O3MiniHook, ResponseCache | None]:
        """The hook and the cache (``None`` when off). Run in a thread: the first call imports them."""
        from airflow_o3.call import connection_hook, response_cache

        return connection_hook(self), response_cache(self.cache)

    async def _send(
        self, hook: O3MiniHook, prepared: PreparedCall, cache: ResponseCache | None
    ) -> Completion:
        """Send on the request loop; cancelled meanwhile (the triggerer stops, or the trigger moves),
        wait up to the cache's ``grace_period`` for the reply to be stored, then let the cancellation
        through."""
        client = await asyncio.to_thread(hook.async_client)  # imports the transport, reads the CA bundle
        in_flight = _run_on_request_loop(_send_with(hook, client, prepared, cache, self.cache_key))
        reply = asyncio.wrap_future(in_flight)
        try:
            return await asyncio.shield(reply)
        except asyncio.CancelledError:
            grace = cache.settings.grace_period if cache is not None and cache.settings.mode == "on" else 0.0
            await self._finish_when_cancelled(reply, in_flight, grace)
            raise

    async def _finish_when_cancelled(
        self,
        reply: asyncio.Future[Completion],
        in_flight: concurrent.futures.Future[Completion],
        grace: float,
    ) -> None:
        if grace > 0:
            self.log.warning(
                "Trigger cancelled while its request is in flight: waiting up to %gs for the reply "
                "to store it in the response cache, so that the next run of this trigger does not pay again",
                grace,
            )
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({reply}, timeout=grace)
        if reply.done() and not reply.cancelled() and reply.exception() is None:
            self.log.info("The reply arrived after the cancellation and went to the response cache")
            return
        if not reply.done():
            in_flight.cancel()
            self.log.warning(
                "Trigger cancelled with its request in flight and no reply stored: the request may be "
                "billed, and the next run of this trigger sends it again"
            )


async def _send_with(
    hook: O3MiniHook,
    client: httpx.AsyncClient,
    prepared: PreparedCall,
    cache: ResponseCache | None,
    key: str | None,
) -> Completion:
    """Send through the hook, and close the client on the loop its connections belong to."""
    async with client:
        return await hook.asend(prepared, client, cache=cache, cache_key=key)


_request_loop: tuple[asyncio.AbstractEventLoop, threading.Thread, int] | None = None
_request_loop_lock = threading.Lock()


def _run_on_request_loop(coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coroutine`` on the process's request loop; cancelling the future cancels it.

    The loop runs in a daemon thread, started on first use (and again in a forked child, which
    inherits the loop but not its thread). The coroutine runs in a copy of the caller's context (the
    triggerer routes a trigger's log lines to its task's log by context variables):
    ``run_coroutine_threadsafe`` schedules the task from a callback in that context.
    """
    global _request_loop
    with _request_loop_lock:
        if _request_loop is None or _request_loop[2] != os.getpid() or not _request_loop[1].is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="airflow-o3-requests", daemon=True)
            thread.start()
            _request_loop = (loop, thread, os.getpid())
        return asyncio.run_coroutine_threadsafe(coroutine, _request_loop[0])


def completion_event(completion: Completion, cache_key: str | None = None) -> dict[str, Any]:
    """The event for a reply: its body, the headers that carry its cost and request id, whether it
    came from the response cache, its cache entry (``None`` without the cache) and the connection
    that answered."""
    from airflow_o3.response import record_headers

    return {
        "status": "success",
        "response": dict(completion.raw),
        "headers": record_headers(completion),
        "from_cache": completion.from_cache,
        "cache_key": cache_key,
        "conn_id": completion.conn_id,
    }


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

    if event.get("status") != "success":
        raise error_from_event(event)
    cached, conn_id = bool(event.get("from_cache")), event.get("conn_id")
    return completion_from_body(event["response"], event["headers"], from_cache=cached, conn_id=conn_id)


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

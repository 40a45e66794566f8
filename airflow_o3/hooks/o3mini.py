"""The hook: owns the ``aimlapi`` connection and the HTTP call to the chat completions endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_o3.cache import ResponseCache, cache_key, connection_fingerprint
from airflow_o3.deprecations import renamed_argument
from airflow_o3.errors import (
    AttemptTimeoutError,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    HttpFailure,
    InvalidRequestError,
    O3Error,
    OutOfCreditsError,
    RedirectError,
    ReplyTooLargeError,
    RequestTimeoutError,
    ServiceError,
    TlsError,
)
from airflow_o3.observability import reported
from airflow_o3.request import build_body, encode_body
from airflow_o3.response import Completion, parse_response
from airflow_o3.retry import RequestRetry, acall_with_retries, call_with_retries
from airflow_o3.settings import ClientSettings, Timeouts, settings_from_connection

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterator, Mapping, Sequence

    import httpx
    import requests

    from airflow_o3.ledger import DailyLedger
    from airflow_o3.ratecontrol import RateController
    from airflow_o3.streaming import OnText

log = logging.getLogger(__name__)


_TEST_SECONDS = 30.0
"""How long :meth:`O3MiniHook.test_connection` waits for the list of models."""

_CHUNK_BYTES = 65536
"""The most read from the socket at once; a read returns as soon as any bytes arrive."""


_TIMEOUT_CLASSES = frozenset({"TimeoutError", "Timeout", "TimeoutException"})
"""The timeout classes of the socket and asyncio, urllib3 (both ``TimeoutError``), requests and httpx,
told by name so that no client is imported."""


def transport_error(url: str, error: BaseException, deadline: _Deadline) -> ServiceError:
    """The one mapping of a transport failure, of requests or httpx, to a typed error: past the
    attempt's deadline an :class:`AttemptTimeoutError`; a timeout a :class:`RequestTimeoutError`;
    anything else a :class:`ConnectError` (:class:`TlsError` when the TLS handshake failed)."""
    kind = type(error).__name__
    if deadline.left() <= 0:
        return deadline.timed_out(url)
    if any(base.__name__ in _TIMEOUT_CLASSES for base in type(error).__mro__):
        return RequestTimeoutError(HttpFailure(None, f"no reply from {url} in time ({kind})"))
    if _tls_failed(error):  # not retried
        return TlsError(HttpFailure(None, f"could not reach {url}: the TLS handshake failed ({kind})"))
    return ConnectError(HttpFailure(None, f"could not reach {url}: {kind}"))


def _tls_failed(error: BaseException) -> bool:
    """Whether ``error`` or one of its causes is an SSL error (of ssl, urllib3, requests or httpx)."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if type(cause).__name__ in ("SSLError", "SSLCertVerificationError") or "SSL:" in str(cause):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


class _Deadline(NamedTuple):
    """When one attempt must be over: ``at`` (a ``time.monotonic()`` value), and that limit in words."""

    at: float
    limit: str

    @classmethod
    def after(cls, seconds: float, setting: str = "attempt_timeout=") -> _Deadline:
        """``seconds`` from now; ``setting`` names the limit in the error (empty for a fixed one)."""
        return cls(time.monotonic() + seconds, f"{setting}{seconds:g}s")

    def left(self) -> float:
        return self.at - time.monotonic()

    def timed_out(self, url: str) -> AttemptTimeoutError:
        return AttemptTimeoutError(
            HttpFailure(
                None,
                f"the reply from {url} was not complete within {self.limit}; the attempt was cut",
            )
        )


def _too_large(url: str, status: int, limit: int) -> ReplyTooLargeError:
    return ReplyTooLargeError(
        HttpFailure(
            status,
            f"the reply from {url} is larger than max_reply_bytes={limit} bytes; it was not read further "
            "and is not asked for again",
        )
    )


def _refuse_redirect(status: int, headers: Mapping[str, str], url: str, base: str) -> None:
    """Raise :class:`RedirectError` for a 3xx answer: a redirect is never followed."""
    if not 300 <= status < 400:
        return
    from urllib.parse import urljoin, urlsplit

    target = urlsplit(urljoin(url, headers.get("location") or ""))
    # Only scheme, host, port and path: a userinfo or a query may hold someone's secret.
    pointed = f"{target.scheme}://{target.netloc.rpartition('@')[2]}{target.path}"
    raise RedirectError(
        HttpFailure(
            status,
            f"the base URL {base} answered {status}, redirecting to {pointed}; redirects are not "
            "followed, so the prompt is never sent to another address",
        )
    )


_warned_short_keys: set[str] = set()


def _key_forms(key: str) -> list[str]:
    """The key as it is, and as it looks JSON-escaped or in a repr (an echo may show either)."""
    return sorted({key, json.dumps(key)[1:-1], repr(key)[1:-1]})


def _mask_key(conn_id: str, key: str) -> None:
    """Have Airflow mask the key in logs, also as it looks JSON-escaped or in a repr; warn (once per
    connection) when it is too short for Airflow 3's masker, which skips secrets under 5 characters."""
    for form in _key_forms(key):
        mask_secret(form)
    if len(key) < 5 and conn_id not in _warned_short_keys:
        _warned_short_keys.add(conn_id)
        log.warning(
            "The API key of connection %r is shorter than 5 characters, too short for Airflow to mask "
            "it in logs; check that the password field holds the whole AI/ML API key",
            conn_id,
        )


@functools.lru_cache(maxsize=16)
def _prepared_url(url: str) -> str:
    """``url`` as requests sends it (IDNA host, quoted path), worked out once per URL."""
    import requests

    request = requests.PreparedRequest()
    request.prepare_url(url, None)
    assert request.url is not None
    return request.url


def _ca_bundle() -> str | None:
    """The CA bundle both paths trust, as requests reads it: ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``
    (``None``: certifi's)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The async path's TLS context, made once per process: it costs the better part of a megabyte."""
    import ssl

    import certifi

    return ssl.create_default_context(cafile=_ca_bundle() or certifi.where())


def _checked_fallbacks(conn_id: str, fallback_conn_ids: Sequence[str]) -> tuple[str, ...]:
    """The fallback connections as a tuple of distinct ids, none of them ``conn_id``."""
    if isinstance(fallback_conn_ids, str):
        raise ConfigurationError(
            f"fallback_conn_ids={fallback_conn_ids!r} is one string (fix: give a list or tuple of "
            f"connection ids, e.g. [{fallback_conn_ids!r}])"
        )
    ids = tuple(fallback_conn_ids)
    for position, fallback in enumerate(ids):
        if not isinstance(fallback, str) or not fallback:
            raise ConfigurationError(
                f"fallback_conn_ids[{position}] is {fallback!r}, not a connection id (fix: give ids as text)"
            )
        if fallback == conn_id or fallback in ids[:position]:
            raise ConfigurationError(
                f"fallback_conn_ids names connection {fallback!r} twice, or the first connection again "
                "(fix: list each fallback connection once, not the conn_id itself)"
            )
    return ids


def _fall_back_or_raise(error: ServiceError, conn_id: str, rest: Sequence[O3MiniHook]) -> None:
    """Return (and warn) when ``error``, the final one of connection ``conn_id``, sends the request on
    to ``rest[0]``: a 401, a 403 (out of credits) or a retryable error that outlived its retries.
    Raise it, naming ``conn_id``, otherwise: no connection left, or an error another connection would
    not mend (a 400, a reply already received but unusable)."""
    named = error.for_connection(conn_id)
    if not rest or not (isinstance(error, AuthenticationError | OutOfCreditsError) or error.retryable):
        raise named from error.__cause__
    log.warning(
        "Connection %r failed (%s); the same request goes to fallback connection %r",
        conn_id,
        named,
        rest[0].conn_id,
    )


@dataclass(frozen=True)
class PreparedCall:
    """A checked request, ready to send: the URL, the body, and the id that traces it at the service."""

    url: str
    body: Mapping[str, Any]
    client_request_id: str | None = None

    @cached_property
    def content(self) -> bytes:
        """The request body as sent: compact JSON, UTF-8 (encoded once, however often it is sent)."""
        return encode_body(self.body)


class O3MiniHook(BaseHook):
    """Calls o3-mini through the AI/ML API chat completions endpoint.

    The connection's password is the API key, its host the base URL (``https://api.aimlapi.com/v1``
    when empty), and its extras tune the defaults: ``model``, ``connect_timeout``, ``read_timeout``,
    ``attempt_timeout``, ``max_reply_bytes``, ``max_attempts``, ``max_retry_seconds``,
    ``initial_backoff``, ``max_backoff``, ``max_retry_after``.

    On the wire: a redirect is never followed (a 3xx is a :class:`RedirectError` naming the base
    URL); one attempt ends at ``attempt_timeout`` (default 1800 s) however slowly the reply
    trickles in, and an event stream that sends only comments ends after ``read_timeout``; a reply
    over ``max_reply_bytes`` (default 20 MB) is refused and not asked for again; an ``https://``
    base URL in front of a plain-HTTP server fails at once with the fix.

    :param conn_id: the Airflow connection of type ``aimlapi`` to use.
    :param request_retry: how a failed HTTP request is retried, overriding the connection's extras: a
        :class:`RequestRetry` or a dict of its fields (e.g. ``{"max_attempts": 3}``).
    :param read_timeout: seconds to wait for the reply's next byte, overriding the connection's
        (or :class:`Timeouts` for connect, read and the whole attempt). A read timeout longer than
        the connection's attempt timeout stretches the attempt timeout to match.
    :param pool_size: connections kept open to the service; raise it for concurrent callers.
    :param rate_control: a controller shared by concurrent callers (a batch's workers): every request
        waits for its turn there, every answer's status and rate-limit headers are reported to it,
        and the waits between retries end early when it is stopped.
    :param fallback_conn_ids: ``aimlapi`` connections to try in turn when a call through ``conn_id``
        fails for good with 401 (key refused), 403 (out of credits) or a retryable error that
        outlived its retries. Each is tried with its own key, base URL and retry extras; a request
        using the first connection's default model gets the fallback's default model. A 400, a local
        error or a reply already received never moves on. The completion's ``conn_id`` says which
        connection answered.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "aimlapi_default"
    conn_type = "aimlapi"
    hook_name = "AI/ML API (o3-mini)"
    call_log_level = logging.INFO
    """Level of the one summary line each call logs; a batch lowers it to DEBUG and logs progress."""

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        request_retry: RequestRetry | Mapping[str, Any] | None = None,
        read_timeout: Timeouts | float | None = None,
        pool_size: int = 16,
        rate_control: RateController | None = None,
        fallback_conn_ids: Sequence[str] = (),
        retry: RequestRetry | Mapping[str, Any] | None = None,
        timeout: Timeouts | float | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self._retry = renamed_argument(request_retry, retry, "retry", "request_retry", "O3MiniHook")
        self._timeout = renamed_argument(read_timeout, timeout, "timeout", "read_timeout", "O3MiniHook")
        self._pool_size = pool_size
        self.rate_control = rate_control
        self.fallback_conn_ids = _checked_fallbacks(conn_id, fallback_conn_ids)

    @cached_property
    def settings(self) -> ClientSettings:
        """The connection's settings, with this hook's overrides applied."""
        return self._settings_from(self.get_connection(self.conn_id))

    async def aget_settings(self) -> ClientSettings:
        """:attr:`settings`, read without blocking an event loop (the triggerer's)."""
        if "settings" not in self.__dict__:
            aget_connection = getattr(self, "aget_connection", None)
            if aget_connection is not None:
                conn = await aget_connection(self.conn_id)
            else:  # Airflow 2
                from asgiref.sync import sync_to_async

                conn = await sync_to_async(self.get_connection)(self.conn_id)
            self.__dict__["settings"] = self._settings_from(conn)
        return self.settings

    def _settings_from(self, conn: Any) -> ClientSettings:
        if conn.password:
            _mask_key(self.conn_id, conn.password)
        settings = settings_from_connection(
            self.conn_id,
            host=conn.host,
            port=conn.port,
            schema=conn.schema,
            password=conn.password,
            extras=conn.extra_dejson,
        )
        retry = self._retry if isinstance(self._retry, RequestRetry) else settings.retry.updated(self._retry)
        timeouts = settings.timeouts
        if isinstance(self._timeout, Timeouts):
            timeouts = self._timeout
        elif self._timeout is not None:
            read = float(self._timeout)
            timeouts = Timeouts(connect=timeouts.connect, read=read, attempt=max(timeouts.attempt, read))
        return replace(settings, timeouts=timeouts, retry=retry)

    @cached_property
    def ledger(self) -> DailyLedger:
        """The connection's daily spend ledger: checked before each request, told of each paid reply."""
        from airflow_o3.ledger import DailyLedger

        settings = self.settings
        fingerprint = connection_fingerprint(settings.base_url, settings.api_key)
        return DailyLedger(self.conn_id, fingerprint, settings.cap)

    @cached_property
    def session(self) -> requests.Session:
        """One pooled HTTP session for every call this hook makes."""
        import requests

        from airflow_o3.hooks._deadline import DeadlineAdapter

        session = requests.Session()
        # Proxy and CA-bundle variables are read once here rather than at every request: requests
        # would rescan the whole environment per call (a fifth of a loopback call's time), and
        # would let a ~/.netrc entry replace the API key's Authorization header.
        session.proxies.update(requests.utils.get_environ_proxies(self.settings.base_url))
        session.verify = _ca_bundle() or True
        session.trust_env = False
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=self._pool_size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def prepare(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        client_request_id: str | None = None,
        **params: Any,
    ) -> PreparedCall:
        """Check a request against the contract without sending it.

        :raises InvalidRequestError: the field that is wrong and how to fix it.
        """
        body = build_body(model or self.settings.model, messages, params)
        return PreparedCall(self.settings.chat_url, body, client_request_id)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        client_request_id: str | None = None,
        cache: ResponseCache | None = None,
        on_text: OnText | None = None,
        **params: Any,
    ) -> Completion:
        """Send one chat completion request and return the reply.

        :param messages: role/content dicts (roles: developer, system, user, assistant, tool).
        :param model: the model; defaults to the connection's ``model`` extra, else ``o3-mini``.
        :param client_request_id: sent as ``X-Client-Request-Id`` so the call can be found at the service.
        :param cache: reuse a stored reply for the same request, and store this one.
        :param on_text: with ``stream=True``, called with (choice index, text) for each piece of the
            reply as it arrives.
        :param params: any contract parameter: reasoning_effort, max_completion_tokens, response_format,
            tools, tool_choice, seed, stop, n, provider, stream. With ``stream=True`` the reply is read
            as server-sent events and assembled into the same :class:`Completion`, usage included.
        :raises InvalidRequestError: before sending, for a parameter or value the contract refuses.
        :raises ServiceError: a subclass naming the status, the service's message and the fix; a
            stream that breaks off after some text arrived is a :class:`StreamCutError`.
        """
        prepared = self.prepare(messages, model=model, client_request_id=client_request_id, **params)
        return self.send(prepared, cache=cache, on_text=on_text)

    def send(
        self, prepared: PreparedCall, *, cache: ResponseCache | None = None, on_text: OnText | None = None
    ) -> Completion:
        """Send a prepared request with the retry settings (then to each fallback connection, if
        needed); read and write ``cache`` when given.

        A streamed request (``stream: true`` in the body) is retried only while no reply text has
        arrived; ``on_text`` gets its text as it comes (a cached reply's text, all at once).
        """
        with reported(self, prepared) as report:
            keys, stored = self._stored(cache, prepared, None, on_text)
            if stored is not None:
                return report(stored)
            chain = self._chain
            for position, hook in enumerate(chain):
                call = hook.retargeted(prepared, self.settings.model)
                hook.ledger.check()
                sleep = hook.rate_control.sleep if hook.rate_control is not None else time.sleep
                try:
                    completion = call_with_retries(
                        hook.settings.retry, partial(hook._attempt, call, on_text), sleep=sleep
                    )
                except ServiceError as error:
                    _fall_back_or_raise(error, hook.conn_id, chain[position + 1 :])
                    continue
                hook.ledger.record(completion)
                return report(self._answered(cache, keys, hook.conn_id, completion))
        raise AssertionError("unreachable: the last connection's error is raised")  # pragma: no cover

    async def asend(
        self,
        prepared: PreparedCall,
        client: httpx.AsyncClient,
        *,
        cache: ResponseCache | None = None,
        cache_key: str | None = None,
    ) -> Completion:
        """The async twin of :meth:`send`, for the triggerer: the same request, retry settings, typed
        errors, fallback connections and response cache (read and written in threads, so no storage
        I/O blocks the loop).

        :param cache_key: the request's cache entry for this hook's connection when it was computed
            elsewhere (by the operator that deferred); by default this hook's :meth:`cache_key`.
        :raises InvalidRequestError: a streamed request (``stream: true``), which this path does not read.
        :raises ServiceError: a subclass naming the status, the service's message and the fix.
        """
        with reported(self, prepared) as report:
            if prepared.body.get("stream"):
                raise InvalidRequestError("asend reads whole replies (fix: send the request without stream)")
            settings = await self.aget_settings()
            keys: dict[str, str] = {}
            if cache is not None:
                for hook in self._chain[1:]:
                    with contextlib.suppress(Exception):  # an unreadable fallback has stored nothing
                        await hook.aget_settings()
                keys, stored = await asyncio.to_thread(self._stored, cache, prepared, cache_key, None)
                if stored is not None:
                    return report(stored)
            chain = self._chain
            for position, hook in enumerate(chain):
                await hook.aget_settings()
                call = hook.retargeted(prepared, settings.model)
                await asyncio.to_thread(hook.ledger.check)
                try:
                    completion = await acall_with_retries(
                        hook.settings.retry, partial(hook._aattempt, call, client)
                    )
                except ServiceError as error:
                    _fall_back_or_raise(error, hook.conn_id, chain[position + 1 :])
                    continue
                await asyncio.to_thread(hook.ledger.record, completion)
                answered = await asyncio.to_thread(self._answered, cache, keys, hook.conn_id, completion)
                return report(answered)
        raise AssertionError("unreachable: the last connection's error is raised")  # pragma: no cover

    def cache_key(self, prepared: PreparedCall) -> str:
        """The response cache's entry for a request sent through this hook's connection.

        It covers the body and the connection's fingerprint (base URL and API key, the key not
        recoverable from it), so one account's replies are never served to another connection.
        """
        settings = self.settings
        return cache_key(connection_fingerprint(settings.base_url, settings.api_key), prepared.body)

    def retargeted(self, prepared: PreparedCall, first_model: str) -> PreparedCall:
        """``prepared`` as sent through this hook's connection when an earlier one failed: this
        connection's URL, and its default model if the request used the first connection's default
        (``first_model``). The same call when nothing changes."""
        settings = self.settings
        model = prepared.body.get("model")
        body: Mapping[str, Any] = prepared.body
        if model == first_model and settings.model != first_model:
            body = {**prepared.body, "model": settings.model}
        if prepared.url == settings.chat_url and body is prepared.body:
            return prepared
        return PreparedCall(settings.chat_url, body, prepared.client_request_id)

    @cached_property
    def _chain(self) -> tuple[O3MiniHook, ...]:
        """The connections a call tries, in order: this hook, then a hook per fallback connection with
        this hook's overrides and rate controller."""
        return self, *(
            O3MiniHook(
                conn_id,
                request_retry=self._retry,
                read_timeout=self._timeout,
                pool_size=self._pool_size,
                rate_control=self.rate_control,
            )
            for conn_id in self.fallback_conn_ids
        )

    def cache_keys(self, prepared: PreparedCall, first_key: str | None = None) -> dict[str, str]:
        """The request's cache entry under each connection of the chain, by conn_id: a reply is
        stored under the connection that answered, so a retry finds it whichever one that was.
        A fallback connection that cannot be read is left out (it cannot have stored anything).

        :param first_key: this hook's entry when it was computed elsewhere (the deferring operator).
        """
        keys = {self.conn_id: first_key or self.cache_key(prepared)}
        for hook in self._chain[1:]:
            try:
                keys[hook.conn_id] = hook.cache_key(hook.retargeted(prepared, self.settings.model))
            except Exception as error:  # not found, unusable: reported when the call gets to it
                log.debug("No cache entry for fallback connection %r: %s", hook.conn_id, type(error).__name__)
        return keys

    def _stored(
        self,
        cache: ResponseCache | None,
        prepared: PreparedCall,
        first_key: str | None,
        on_text: OnText | None,
    ) -> tuple[dict[str, str], Completion | None]:
        """The one read of the response cache, for every path (sync, batch, triggerer): the request's
        :meth:`cache_keys`, and the reply stored under any of them, first found first."""
        if cache is None:
            return {}, None
        keys = self.cache_keys(prepared, first_key)
        for conn_id, key in keys.items():
            if (stored := cache.get(key)) is None:
                continue
            log.log(
                self.call_log_level,
                "Reply read from the response cache (entry %s, answered through connection %r): nothing "
                "was paid for it",
                key[:16],
                conn_id,
            )
            if on_text is not None:
                for choice in stored.choices:
                    if choice.text:
                        on_text(choice.index, choice.text)
            return keys, replace(stored, conn_id=conn_id)
        return keys, None

    def _answered(
        self, cache: ResponseCache | None, keys: Mapping[str, str], conn_id: str, completion: Completion
    ) -> Completion:
        """Store a paid reply under the entry of the connection that answered; name that connection."""
        if cache is not None and conn_id in keys:  # the one write of the cache, for every path
            cache.put(keys[conn_id], completion)
        return completion if completion.conn_id == conn_id else replace(completion, conn_id=conn_id)

    def _attempt(self, prepared: PreparedCall, on_text: OnText | None) -> Completion:
        """One attempt over requests, in turn at the rate controller (told of the answer): a whole
        reply, or a stream assembled as it arrives."""
        stream = bool(prepared.body.get("stream"))
        deadline = _Deadline.after(self.settings.timeouts.attempt)
        sent = self.settings.headers(prepared.client_request_id, stream=stream)
        if self.rate_control is not None:
            self.rate_control.acquire()
        with (
            self._keyless(),
            self._request("POST", prepared.url, sent, deadline, data=prepared.content) as response,
        ):
            status, headers = response.status_code, response.headers
            if self.rate_control is not None:
                self.rate_control.observe(status, headers)
            body = self._body(response, prepared.url, deadline)
            if stream and 200 <= status < 300 and "text/event-stream" in headers.get("Content-Type", ""):
                return self._assembled(status, headers, body, on_text)
            return parse_response(status, headers, b"".join(body), conn_id=self.conn_id)

    def _assembled(
        self, status: int, headers: Mapping[str, str], body: Iterator[bytes], on_text: OnText | None
    ) -> Completion:
        from airflow_o3.streaming import NoProgress, StreamAssembler, sse_data, sse_lines

        assembler = StreamAssembler(status, headers, on_text)
        try:
            for data in sse_data(sse_lines(body), idle_timeout=self.settings.timeouts.read):
                assembler.feed(data)
        except NoProgress as idle:
            raise assembler.interrupted(str(idle), timed_out=True) from None
        except (RequestTimeoutError, ConnectError) as error:
            raise assembler.interrupted(error.failure.message, error=error) from None
        return assembler.completion()

    @contextlib.contextmanager
    def _keyless(self) -> Iterator[None]:
        """Blank the API key out of any error raised inside, should the service echo it."""
        try:
            yield
        except ServiceError as error:
            key = self.settings.api_key
            if len(key) < 5:  # too short to tell from ordinary text (a warning said so)
                raise
            raise error.without(_key_forms(key)) from None

    def _request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        deadline: _Deadline,
        *,
        data: bytes | None = None,
    ) -> requests.Response:
        """Send one request and wait for the reply's headers until ``deadline`` at the latest,
        without following a redirect."""
        import requests

        from airflow_o3.hooks._deadline import deadline as headers_by

        session = self.session
        request = requests.PreparedRequest()
        request.method, request.url, request.body = method, _prepared_url(url), data
        request.headers = requests.structures.CaseInsensitiveDict(headers)
        if data is not None:
            request.headers["Content-Length"] = str(len(data))
        timeouts = self.settings.timeouts
        try:
            with headers_by(deadline.at):
                response = session.get_adapter(request.url).send(
                    request,
                    stream=True,
                    timeout=(timeouts.connect, max(0.001, min(timeouts.read, deadline.left()))),
                    verify=session.verify if session.verify is not None else True,
                    proxies=session.proxies,
                )
        except (requests.Timeout, requests.ConnectionError) as error:
            raise transport_error(url, error, deadline) from None
        try:
            _refuse_redirect(response.status_code, response.headers, url, self.settings.base_url)
        except RedirectError:
            response.close()
            raise
        return response

    def _body(self, response: requests.Response, url: str, deadline: _Deadline) -> Iterator[bytes]:
        """The reply's body as it was sent (unencoded: the request asks for identity), in pieces as
        they arrive. Each wait for bytes is bounded by the read timeout and by what is left of the
        attempt, and a read returns whatever has arrived, so a reply trickling in is cut at the deadline.
        """
        from urllib3.exceptions import HTTPError

        settings = self.settings
        received = 0
        while True:
            wait = min(settings.timeouts.read, deadline.left())
            if wait <= 0:
                raise deadline.timed_out(url)
            # the reply's socket, which urllib3 keeps while the body is read
            sock = getattr(getattr(response.raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(wait)
            try:
                chunk = response.raw.read1(_CHUNK_BYTES)
            except (HTTPError, OSError) as error:
                raise transport_error(url, error, deadline) from None
            if not chunk:
                return
            received += len(chunk)
            if received > settings.max_reply_bytes:
                raise _too_large(url, response.status_code, settings.max_reply_bytes)
            yield chunk
            if response.raw.length_remaining == 0:  # the whole Content-Length: no read for the end
                return

    def async_client(self) -> httpx.AsyncClient:
        """An httpx client for :meth:`asend`. Its TLS context (the CA bundle, read once per process)
        is shared, so each client costs kilobytes rather than the better part of a megabyte."""
        import httpx

        return httpx.AsyncClient(verify=_tls_context(), follow_redirects=False)

    async def _aattempt(self, prepared: PreparedCall, client: httpx.AsyncClient) -> Completion:
        """One attempt over httpx, cut at the attempt timeout whatever the server does; a redirect and
        a reply over the size limit are refused."""
        import httpx

        settings = self.settings
        deadline = _Deadline.after(settings.timeouts.attempt)
        with self._keyless():
            try:
                async with (
                    asyncio.timeout(deadline.left()),
                    client.stream(
                        "POST",
                        prepared.url,
                        content=prepared.content,
                        headers=settings.headers(prepared.client_request_id),
                        timeout=httpx.Timeout(settings.timeouts.read, connect=settings.timeouts.connect),
                        follow_redirects=False,
                    ) as response,
                ):
                    _refuse_redirect(response.status_code, response.headers, prepared.url, settings.base_url)
                    content = bytearray()
                    async for chunk in response.aiter_bytes():
                        content += chunk
                        if len(content) > settings.max_reply_bytes:
                            raise _too_large(prepared.url, response.status_code, settings.max_reply_bytes)
            except (TimeoutError, httpx.TransportError) as error:
                raise transport_error(prepared.url, error, deadline) from None
            return parse_response(
                response.status_code, response.headers, bytes(content), conn_id=self.conn_id
            )

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection without spending money: the key is set and the service answers.

        It lists the models at ``{base}/models``, which costs nothing. That endpoint does not check
        the key, so a wrong key shows only at the first real call (as a 401 naming this connection).
        A missing or unusable connection is reported as ``(False, message)``, never raised.
        """
        started = time.monotonic()
        try:
            settings = self.settings
        except O3Error as error:
            return False, str(error)
        except Exception as error:  # Airflow's "not found", or a connection it cannot parse
            return False, (
                f"connection {self.conn_id!r} could not be read ({type(error).__name__}) (fix: create it "
                "with connection type aimlapi and the API key in its password field)"
            )
        try:
            with self._keyless():
                status, headers, content = self.get_url(settings.models_url, settings.headers())
                if status != 200:
                    parse_response(status, headers, content)
        except ServiceError as error:
            return False, f"GET {settings.models_url}: {error.for_connection(self.conn_id)}"
        try:
            models = {str(model.get("id")) for model in json.loads(content).get("data", [])}
        except (ValueError, AttributeError):
            models = set()
        listed = "is listed" if settings.model in models else "is NOT listed"
        from airflow_o3.billing import balance_summary

        balance = balance_summary(self)
        return True, (
            f"Reached {settings.models_url} in {time.monotonic() - started:.2f}s; model "
            f"{settings.model!r} {listed}; an API key is set (it is checked by the first real call, "
            f"since listing models is free and needs no key); {balance}"
        )

    def get_url(
        self, url: str, headers: Mapping[str, str], *, seconds: float = _TEST_SECONDS
    ) -> tuple[int, Mapping[str, str], bytes]:
        """GET ``url`` (the models list, the billing host's balance) over this hook's session, as a
        POST is sent: within ``seconds`` in all, no redirect followed, ``max_reply_bytes`` kept.

        :raises ServiceError: as :func:`transport_error` maps a failure; :class:`RedirectError` for a
            3xx, :class:`ReplyTooLargeError` for a reply over the size limit.
        """
        deadline = _Deadline.after(seconds, setting="")
        with self._request("GET", url, headers, deadline) as response:
            return response.status_code, response.headers, b"".join(self._body(response, url, deadline))

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 2 (Airflow 3 reads the provider info instead)."""
        from airflow_o3.get_provider_info import CONNECTION_TYPE

        return {
            name.replace("-", "_"): value for name, value in CONNECTION_TYPE["ui-field-behaviour"].items()
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields on Airflow 2 (Airflow 3 reads ``conn-fields``)."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, StringField

        from airflow_o3.get_provider_info import CONNECTION_TYPE

        widgets: dict[str, Any] = {}
        for name, spec in CONNECTION_TYPE["conn-fields"].items():
            field_class = IntegerField if "integer" in spec["schema"]["type"] else StringField
            widgets[name] = field_class(
                lazy_gettext(spec["label"]), widget=BS3TextFieldWidget(), description=spec["description"]
            )
        return widgets

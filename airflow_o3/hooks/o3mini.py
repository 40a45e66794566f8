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
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_o3.cache import ResponseCache, cache_key, connection_fingerprint
from airflow_o3.errors import (
    AttemptTimeoutError,
    ConnectError,
    HttpFailure,
    InvalidRequestError,
    O3Error,
    RedirectError,
    ReplyTooLargeError,
    RequestTimeoutError,
    ServiceError,
    TlsError,
)
from airflow_o3.observability import observed, observed_async
from airflow_o3.request import build_body, encode_body
from airflow_o3.response import Completion, parse_response
from airflow_o3.retry import RetryPolicy, acall_with_retries, call_with_retries
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


def _no_reply(url: str, error: Exception) -> RequestTimeoutError:
    """A timeout of the sync or the async client, as one typed error."""
    return RequestTimeoutError(HttpFailure(None, f"no reply from {url} in time ({type(error).__name__})"))


def _unreachable(url: str, error: BaseException) -> ConnectError:
    """A connection failure of the sync or the async client, as one typed error; a failed TLS
    handshake is a :class:`TlsError`, which is not retried."""
    if _tls_failed(error):
        return TlsError(
            HttpFailure(None, f"could not reach {url}: the TLS handshake failed ({type(error).__name__})")
        )
    return ConnectError(HttpFailure(None, f"could not reach {url}: {type(error).__name__}"))


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
    """When one attempt must be over: ``at`` (a ``time.monotonic()`` value), ``seconds`` after it began."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> _Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    def timed_out(self, url: str) -> AttemptTimeoutError:
        return AttemptTimeoutError(
            HttpFailure(
                None,
                f"the reply from {url} was not complete within attempt_timeout={self.seconds:g}s; "
                "the attempt was cut",
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
    try:
        port = f":{target.port}" if target.port else ""
    except ValueError:
        port = ""
    # Only scheme, host, port and path: a userinfo or a query may hold someone's secret.
    pointed = f"{target.scheme}://{target.hostname or ''}{port}{target.path}"
    raise RedirectError(
        HttpFailure(
            status,
            f"the base URL {base} answered {status}, redirecting to {pointed}; redirects are not "
            "followed, so the prompt is never sent to another address",
        )
    )


_warned_short_keys: set[str] = set()


def _mask_key(conn_id: str, key: str) -> None:
    """Have Airflow mask the key in logs, also as it looks JSON-escaped or in a repr; warn (once per
    connection) when it is too short for Airflow 3's masker, which skips secrets under 5 characters."""
    for form in {key, json.dumps(key)[1:-1], repr(key)[1:-1]}:
        mask_secret(form)
    if len(key) < 5 and conn_id not in _warned_short_keys:
        _warned_short_keys.add(conn_id)
        log.warning(
            "The API key of connection %r is shorter than 5 characters, too short for Airflow to mask "
            "it in logs; check that the password field holds the whole AI/ML API key",
            conn_id,
        )


def _limit_wait(response: requests.Response, seconds: float) -> None:
    """Bound the next wait for bytes on the reply's socket (urllib3 keeps it while the body is read)."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The CA bundle the sync path uses too: ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, else certifi's."""
    import ssl

    import certifi

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle or certifi.where())


@dataclass(frozen=True)
class PreparedCall:
    """A checked request, ready to send: the URL, the body, and the id that traces it at the service."""

    url: str
    body: Mapping[str, Any]
    client_request_id: str | None = None

    @property
    def content(self) -> bytes:
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
    :param retry: retry settings that override the connection's, as a :class:`RetryPolicy` or a dict
        of its fields (e.g. ``{"max_attempts": 3}``).
    :param timeout: read timeout in seconds, or :class:`Timeouts` for connect, read and the whole
        attempt, overriding the connection's. A read timeout longer than the connection's attempt
        timeout stretches the attempt timeout to match.
    :param pool_size: connections kept open to the service; raise it for concurrent callers.
    :param rate_control: a controller shared by concurrent callers (a batch's workers): every request
        waits for its turn there, every answer's status and rate-limit headers are reported to it,
        and the waits between retries end early when it is stopped.
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
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        timeout: Timeouts | float | None = None,
        pool_size: int = 16,
        rate_control: RateController | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self._retry = retry
        self._timeout = timeout
        self._pool_size = pool_size
        self.rate_control = rate_control

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
        retry = self._retry if isinstance(self._retry, RetryPolicy) else settings.retry.updated(self._retry)
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
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
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

    @observed
    def send(
        self, prepared: PreparedCall, *, cache: ResponseCache | None = None, on_text: OnText | None = None
    ) -> Completion:
        """Send a prepared request with the retry policy; read and write ``cache`` when given.

        A streamed request (``stream: true`` in the body) is retried only while no reply text has
        arrived; ``on_text`` gets its text as it comes (a cached reply's text, all at once).
        """
        key = self.cache_key(prepared) if cache is not None else ""
        if cache is not None and (stored := cache.get(key)) is not None:
            log.log(
                self.call_log_level,
                "Reply read from the response cache (entry %s): nothing was paid for it",
                key[:16],
            )
            if on_text is not None:
                for choice in stored.choices:
                    if choice.text:
                        on_text(choice.index, choice.text)
            return stored
        self.ledger.check()
        sleep = self.rate_control.sleep if self.rate_control is not None else time.sleep
        try:
            if prepared.body.get("stream"):
                completion = call_with_retries(
                    self.settings.retry, lambda: self._post_stream(prepared, on_text), sleep=sleep
                )
            else:
                completion = call_with_retries(self.settings.retry, lambda: self._post(prepared), sleep=sleep)
        except ServiceError as error:
            raise error.for_connection(self.conn_id) from error.__cause__
        self.ledger.record(completion)
        if cache is not None:
            cache.put(key, completion)
        return completion

    def cache_key(self, prepared: PreparedCall) -> str:
        """The response cache's entry for a request sent through this hook's connection.

        It covers the body and the connection's fingerprint (base URL and API key, the key not
        recoverable from it), so one account's replies are never served to another connection.
        """
        settings = self.settings
        return cache_key(connection_fingerprint(settings.base_url, settings.api_key), prepared.body)

    def _post(self, prepared: PreparedCall) -> Completion:
        deadline = _Deadline.after(self.settings.timeouts.attempt)
        with self._keyless(), self._open(prepared, deadline, stream=False) as response:
            content = b"".join(self._body(response, prepared.url, deadline))
            return parse_response(response.status_code, response.headers, content)

    def _post_stream(self, prepared: PreparedCall, on_text: OnText | None) -> Completion:
        from airflow_o3.streaming import NoProgress, StreamAssembler, sse_data, sse_lines

        settings = self.settings
        deadline = _Deadline.after(settings.timeouts.attempt)
        with self._keyless(), self._open(prepared, deadline, stream=True) as response:
            body = self._body(response, prepared.url, deadline)
            content_type = response.headers.get("Content-Type", "")
            if not 200 <= response.status_code < 300 or "text/event-stream" not in content_type:
                return parse_response(response.status_code, response.headers, b"".join(body))
            assembler = StreamAssembler(response.status_code, response.headers, on_text)
            try:
                for data in sse_data(sse_lines(body), idle_timeout=settings.timeouts.read):
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
            raise error.without(sorted({key, json.dumps(key)[1:-1], repr(key)[1:-1]})) from None

    def _open(self, prepared: PreparedCall, deadline: _Deadline, *, stream: bool) -> requests.Response:
        """POST the body and wait for the reply's headers; a failure to connect or to get them, and a
        redirect, become typed errors. The body is left to :meth:`_body`.

        :param deadline: when the attempt must be over.
        :param stream: ask for server-sent events.
        """

        settings = self.settings
        headers = settings.headers(prepared.client_request_id)
        if stream:
            headers["Accept"] = "text/event-stream"
        if self.rate_control is not None:
            self.rate_control.acquire()
        response = self._request("POST", prepared.url, headers, deadline, data=prepared.content)
        if self.rate_control is not None:
            self.rate_control.observe(response.status_code, response.headers)
        return response

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
        without following a redirect.

        :raises AttemptTimeoutError: the headers had not all arrived by ``deadline``.
        :raises RequestTimeoutError: no byte within the read timeout.
        :raises ConnectError: the service could not be reached (:class:`TlsError`: TLS failed).
        :raises RedirectError: a 3xx answer.
        """
        import requests

        from airflow_o3.hooks._deadline import deadline as headers_by

        timeouts = self.settings.timeouts
        try:
            with headers_by(deadline.at):
                response = self.session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=(timeouts.connect, max(0.001, min(timeouts.read, deadline.left()))),
                    stream=True,
                    allow_redirects=False,
                )
        except (requests.Timeout, requests.ConnectionError) as error:
            if deadline.left() <= 0:
                raise deadline.timed_out(url) from None
            if isinstance(error, requests.Timeout):
                raise _no_reply(url, error) from None
            raise _unreachable(url, error) from None
        try:
            _refuse_redirect(response.status_code, response.headers, url, self.settings.base_url)
        except RedirectError:
            response.close()
            raise
        return response

    def _body(self, response: requests.Response, url: str, deadline: _Deadline) -> Iterator[bytes]:
        """The reply's body, decoded, in pieces as they arrive.

        Each wait for bytes is bounded by the read timeout and by what is left of the attempt, and
        a read returns whatever has arrived, so a reply trickling in is cut at the deadline.

        :raises AttemptTimeoutError: the deadline passed.
        :raises ReplyTooLargeError: more than ``max_reply_bytes`` arrived.
        """
        from urllib3.exceptions import HTTPError, ReadTimeoutError

        settings = self.settings
        received = 0
        while True:
            wait = min(settings.timeouts.read, deadline.left())
            if wait <= 0:
                raise deadline.timed_out(url)
            _limit_wait(response, wait)
            try:
                chunk = response.raw.read1(_CHUNK_BYTES)
            except ReadTimeoutError as error:
                if deadline.left() <= 0:
                    raise deadline.timed_out(url) from None
                raise _no_reply(url, error) from None
            except (HTTPError, OSError) as error:
                raise _unreachable(url, error) from None
            if not chunk:
                return
            received += len(chunk)
            if received > settings.max_reply_bytes:
                raise _too_large(url, response.status_code, settings.max_reply_bytes)
            yield chunk

    def async_client(self) -> httpx.AsyncClient:
        """An httpx client for :meth:`asend`. Its TLS context (the CA bundle, read once per process)
        is shared, so each client costs kilobytes rather than the better part of a megabyte."""
        import httpx

        return httpx.AsyncClient(verify=_tls_context(), follow_redirects=False)

    @observed_async
    async def asend(self, prepared: PreparedCall, client: httpx.AsyncClient) -> Completion:
        """The async twin of :meth:`send`, for the triggerer: the same retry policy, the same typed errors.

        The response cache is not read here: the trigger reads and writes it in threads, so no storage
        I/O blocks the triggerer's event loop.

        :raises InvalidRequestError: a streamed request (``stream: true``), which this path does not read.
        :raises ServiceError: a subclass naming the status, the service's message and the fix.
        """
        if prepared.body.get("stream"):
            raise InvalidRequestError("asend reads whole replies (fix: send the request without stream)")
        settings = await self.aget_settings()
        await asyncio.to_thread(self.ledger.check)
        try:
            completion = await acall_with_retries(settings.retry, lambda: self._apost(prepared, client))
        except ServiceError as error:
            raise error.for_connection(self.conn_id) from error.__cause__
        await asyncio.to_thread(self.ledger.record, completion)
        return completion

    async def _apost(self, prepared: PreparedCall, client: httpx.AsyncClient) -> Completion:
        """One attempt over httpx, cut at the attempt timeout whatever the server does."""
        import httpx

        settings = self.settings
        try:
            with self._keyless():
                async with asyncio.timeout(settings.timeouts.attempt):
                    status, headers, content = await self._aexchange(prepared, client)
        except TimeoutError:
            raise _Deadline(0.0, settings.timeouts.attempt).timed_out(prepared.url) from None
        except httpx.TimeoutException as error:
            raise _no_reply(prepared.url, error) from None
        except httpx.TransportError as error:
            raise _unreachable(prepared.url, error) from None
        with self._keyless():
            return parse_response(status, headers, content)

    async def _aexchange(
        self, prepared: PreparedCall, client: httpx.AsyncClient
    ) -> tuple[int, httpx.Headers, bytes]:
        """POST the body and read the reply, refusing a redirect and a reply over the size limit."""
        import httpx

        settings = self.settings
        async with client.stream(
            "POST",
            prepared.url,
            content=prepared.content,
            headers=settings.headers(prepared.client_request_id),
            timeout=httpx.Timeout(settings.timeouts.read, connect=settings.timeouts.connect),
            follow_redirects=False,
        ) as response:
            _refuse_redirect(response.status_code, response.headers, prepared.url, settings.base_url)
            pieces: list[bytes] = []
            received = 0
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if received > settings.max_reply_bytes:
                    raise _too_large(prepared.url, response.status_code, settings.max_reply_bytes)
                pieces.append(chunk)
            return response.status_code, response.headers, b"".join(pieces)

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
                status, headers, content = self._get(settings.models_url, settings.headers())
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

        balance = balance_summary(settings.billing_base_url, settings.api_key, self.ledger)
        return True, (
            f"Reached {settings.models_url} in {time.monotonic() - started:.2f}s; model "
            f"{settings.model!r} {listed}; an API key is set (it is checked by the first real call, "
            f"since listing models is free and needs no key); {balance}"
        )

    def _get(self, url: str, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        """GET ``url`` within 30 s, as a POST is sent: no redirect followed, the size limit kept."""
        deadline = _Deadline.after(_TEST_SECONDS)
        with self._request("GET", url, headers, deadline) as response:
            return response.status_code, response.headers, b"".join(self._body(response, url, deadline))

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 2 (Airflow 3 reads the provider info instead)."""
        from airflow_o3.get_provider_info import CONNECTION_TYPE

        behaviour = CONNECTION_TYPE["ui-field-behaviour"]
        return {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
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

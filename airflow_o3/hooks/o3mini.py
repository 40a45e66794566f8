"""The hook: owns the ``aimlapi`` connection and the HTTP call to the chat completions endpoint."""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook, mask_secret

from airflow_o3.cache import ResponseCache, cache_key
from airflow_o3.errors import (
    ConnectError,
    HttpFailure,
    InvalidRequestError,
    O3Error,
    RequestTimeoutError,
    ServiceError,
)
from airflow_o3.observability import observed, observed_async
from airflow_o3.request import build_body, encode_body
from airflow_o3.response import Completion, parse_response
from airflow_o3.retry import RetryPolicy, acall_with_retries, call_with_retries
from airflow_o3.settings import ClientSettings, Timeouts, settings_from_connection

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping, Sequence

    import httpx
    import requests

    from airflow_o3.ratecontrol import RateController
    from airflow_o3.streaming import OnText

log = logging.getLogger(__name__)


def _no_reply(url: str, error: Exception) -> RequestTimeoutError:
    """A timeout of the sync or the async client, as one typed error."""
    return RequestTimeoutError(HttpFailure(None, f"no reply from {url} in time ({type(error).__name__})"))


def _unreachable(url: str, error: Exception) -> ConnectError:
    """A connection failure of the sync or the async client, as one typed error."""
    return ConnectError(HttpFailure(None, f"could not reach {url}: {type(error).__name__}"))


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
    ``max_attempts``, ``max_retry_seconds``, ``initial_backoff``, ``max_backoff``, ``max_retry_after``.

    :param conn_id: the Airflow connection of type ``aimlapi`` to use.
    :param retry: retry settings that override the connection's, as a :class:`RetryPolicy` or a dict
        of its fields (e.g. ``{"max_attempts": 3}``).
    :param timeout: read timeout in seconds, or :class:`Timeouts` for both connect and read, overriding
        the connection's.
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
            mask_secret(conn.password)
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
            timeouts = Timeouts(connect=timeouts.connect, read=float(self._timeout))
        return replace(settings, timeouts=timeouts, retry=retry)

    @cached_property
    def session(self) -> requests.Session:
        """One pooled HTTP session for every call this hook makes."""
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        # Proxy and CA-bundle variables are read once here rather than at every request: requests
        # would rescan the whole environment per call (a fifth of a loopback call's time), and
        # would let a ~/.netrc entry replace the API key's Authorization header.
        session.proxies.update(requests.utils.get_environ_proxies(self.settings.base_url))
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size)
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
        key = cache_key(self.settings.base_url, prepared.body) if cache is not None else ""
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
        if cache is not None:
            cache.put(key, completion)
        return completion

    def _post(self, prepared: PreparedCall) -> Completion:
        response = self._open(prepared, stream=False)
        return parse_response(response.status_code, response.headers, response.content)

    def _post_stream(self, prepared: PreparedCall, on_text: OnText | None) -> Completion:
        import requests

        from airflow_o3.streaming import StreamAssembler, sse_data

        with self._open(prepared, stream=True) as response:
            content_type = response.headers.get("Content-Type", "")
            if not 200 <= response.status_code < 300 or "text/event-stream" not in content_type:
                return parse_response(response.status_code, response.headers, response.content)
            assembler = StreamAssembler(response.status_code, response.headers, on_text)
            try:
                for data in sse_data(response.iter_lines()):
                    assembler.feed(data)
            except requests.RequestException as error:
                timed_out = isinstance(error, requests.Timeout) or "timed out" in str(error).lower()
                raise assembler.interrupted(type(error).__name__, timed_out=timed_out) from None
            return assembler.completion()

    def _open(self, prepared: PreparedCall, *, stream: bool) -> requests.Response:
        """POST the body; a failure to connect or to get the reply's first byte becomes a typed error."""
        import requests

        settings = self.settings
        headers = settings.headers(prepared.client_request_id)
        if stream:
            headers["Accept"] = "text/event-stream"
        if self.rate_control is not None:
            self.rate_control.acquire()
        try:
            response = self.session.post(
                prepared.url,
                data=prepared.content,
                headers=headers,
                timeout=(settings.timeouts.connect, settings.timeouts.read),
                stream=stream,
            )
        except requests.Timeout as error:
            raise _no_reply(prepared.url, error) from None
        except requests.ConnectionError as error:
            raise _unreachable(prepared.url, error) from None
        if self.rate_control is not None:
            self.rate_control.observe(response.status_code, response.headers)
        return response

    def async_client(self) -> httpx.AsyncClient:
        """An httpx client for :meth:`asend`. Its TLS context (the CA bundle, read once per process)
        is shared, so each client costs kilobytes rather than the better part of a megabyte."""
        import httpx

        return httpx.AsyncClient(verify=_tls_context())

    @observed_async
    async def asend(self, prepared: PreparedCall, client: httpx.AsyncClient) -> Completion:
        """The async twin of :meth:`send`, for the triggerer: the same retry policy, the same typed errors.

        The response cache is not read here: the operator reads it before deferring and stores the
        reply when the task resumes, so no storage I/O blocks the triggerer's event loop.

        :raises InvalidRequestError: a streamed request (``stream: true``), which this path does not read.
        :raises ServiceError: a subclass naming the status, the service's message and the fix.
        """
        if prepared.body.get("stream"):
            raise InvalidRequestError("asend reads whole replies (fix: send the request without stream)")
        settings = await self.aget_settings()
        try:
            return await acall_with_retries(settings.retry, lambda: self._apost(prepared, client))
        except ServiceError as error:
            raise error.for_connection(self.conn_id) from error.__cause__

    async def _apost(self, prepared: PreparedCall, client: httpx.AsyncClient) -> Completion:
        import httpx

        settings = self.settings
        try:
            response = await client.post(
                prepared.url,
                content=prepared.content,
                headers=settings.headers(prepared.client_request_id),
                timeout=httpx.Timeout(settings.timeouts.read, connect=settings.timeouts.connect),
            )
        except httpx.TimeoutException as error:
            raise _no_reply(prepared.url, error) from None
        except httpx.TransportError as error:
            raise _unreachable(prepared.url, error) from None
        return parse_response(response.status_code, response.headers, response.content)

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection without spending money: the key is set and the service answers.

        It lists the models at ``{base}/models``, which costs nothing. That endpoint does not check
        the key, so a wrong key shows only at the first real call (as a 401 naming this connection).
        """
        started = time.monotonic()
        try:
            settings = self.settings
            response = self.session.get(
                settings.models_url,
                headers=settings.headers(),
                timeout=(settings.timeouts.connect, 30.0),
            )
        except O3Error as error:
            return False, str(error)
        except Exception as error:
            return False, f"could not reach {self.settings.base_url}: {type(error).__name__}"
        if response.status_code != 200:
            try:
                parse_response(response.status_code, response.headers, response.content)
            except ServiceError as error:
                return False, f"GET {settings.models_url}: {error}"
        try:
            models = {str(model.get("id")) for model in response.json().get("data", [])}
        except (ValueError, AttributeError):
            models = set()
        listed = "is listed" if settings.model in models else "is NOT listed"
        return True, (
            f"Reached {settings.models_url} in {time.monotonic() - started:.2f}s; model "
            f"{settings.model!r} {listed}; an API key is set (it is checked by the first real call, "
            "since listing models is free and needs no key)"
        )

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

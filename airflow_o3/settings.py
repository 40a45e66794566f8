"""What the hook reads from an ``aimlapi`` Airflow connection."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_o3 import __version__
from airflow_o3.billing import DEFAULT_BILLING_BASE_URL, billing_base_url_from_extras
from airflow_o3.errors import ConfigurationError
from airflow_o3.ledger import CapSettings, cap_settings_from_extras, extra_number
from airflow_o3.retry import RequestRetry

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_BASE_URL = "https://api.aimlapi.com/v1"
DEFAULT_MODEL = "o3-mini"
USER_AGENT = f"airflow-o3/{__version__}"
DEFAULT_MAX_REPLY_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for the service.

    :param connect: to open the connection.
    :param read: between two bytes of the reply; a high reasoning effort can think for minutes
        before the first byte, so the default is generous.
    :param attempt: for the whole of one attempt, first byte to last: a reply trickling in byte by
        byte, or a stream of keep-alive comments, is cut here. At least ``read``.
    """

    connect: float = 10.0
    read: float = 600.0
    attempt: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "attempt"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(
                    f"{name}_timeout={value!r} is not a finite number of seconds above 0 (fix: set it to "
                    f"seconds, e.g. {getattr(Timeouts, name):g})"
                )
        if self.attempt < self.read:
            raise ConfigurationError(
                f"attempt_timeout={self.attempt:g}s is shorter than read_timeout={self.read:g}s (fix: "
                "raise the connection extra attempt_timeout, or lower the read timeout)"
            )


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to send a request, read once from the connection."""

    base_url: str
    api_key: str = field(repr=False)
    model: str = DEFAULT_MODEL
    timeouts: Timeouts = Timeouts()
    retry: RequestRetry = RequestRetry()
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    billing_base_url: str = DEFAULT_BILLING_BASE_URL
    cap: CapSettings = field(default_factory=CapSettings)

    @property
    def chat_url(self) -> str:
        """The chat completions endpoint of the connection."""
        return f"{self.base_url}/chat/completions"

    @property
    def models_url(self) -> str:
        """The models endpoint (``test_connection`` reads it; it costs nothing)."""
        return f"{self.base_url}/models"

    def headers(self, client_request_id: str | None = None, *, stream: bool = False) -> dict[str, str]:
        """Request headers; they hold the key, so they are never logged or put in an error.

        :param stream: ask for server-sent events rather than one JSON reply.
        """
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            # The sync path reads the raw bytes (to bound each wait and the size): no gzip, please.
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        if client_request_id:
            headers["X-Client-Request-Id"] = client_request_id
        return headers


def base_url(host: str | None, port: int | None, schema: str | None) -> str:
    """The service's base URL from the connection's host, port and schema fields.

    A host with a scheme (``http://127.0.0.1:8765/v1``) is the base URL as it stands; a bare host
    (``api.aimlapi.com``) becomes ``https://<host>[:port]/<schema or v1>``; no host means the service.

    :raises ConfigurationError: a host with credentials before ``@``, a query string or a fragment;
        the message never repeats the credentials or the query.
    """
    host = (host or "").strip().rstrip("/")
    if not host:
        return DEFAULT_BASE_URL
    if "://" in host:
        url = host
    else:
        netloc = f"{host}:{port}" if port else host
        url = f"https://{netloc}/{(schema or 'v1').strip('/')}"
    _check_base_url(url)
    return url


def _check_base_url(url: str) -> None:
    if "@" in url:  # before anything else: the message must not show what is around it
        raise ConfigurationError(
            "the connection's host has an '@': credentials in a URL ('user:password@host') would be "
            "sent to the server and shown in logs (fix: remove them from the host, which is not "
            "repeated here; the API key belongs in the password field)"
        )
    parts = urlsplit(url)
    bare = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    for mark, what in (("?", "a query string ('?...')"), ("#", "a fragment ('#...')")):
        if mark in url:
            raise ConfigurationError(
                f"the connection's host {bare} is followed by {what}, which would mangle the "
                f"request URL (fix: set the host to the base URL alone, e.g. {bare})"
            )


_SECONDS = "a number of seconds above 0"


def _size(conn_id: str, extras: Mapping[str, Any], name: str, default: int) -> int:
    """A byte count extra: a whole number above 0 (a boolean neither), or ``default`` when unset."""
    wanted = f"a whole number of bytes above 0, e.g. {default} for 20 MB"
    number = extra_number(conn_id, extras, name, wanted, 0.0)
    if number is not None and not number.is_integer():
        raise ConfigurationError(
            f"connection extra {name}={extras[name]!r} is not a whole number (fix: set it to {wanted})"
        )
    return default if number is None else int(number)


def settings_from_connection(
    conn_id: str,
    *,
    host: str | None,
    port: int | None,
    schema: str | None,
    password: str | None,
    extras: Mapping[str, Any],
) -> ClientSettings:
    """:class:`ClientSettings` from the fields of an ``aimlapi`` connection.

    :raises ConfigurationError: no API key or one with a space or a line break, an extra that is not a
        finite number, or a host with credentials, a query string or a fragment.
    """
    if not password:
        raise ConfigurationError(
            f"connection {conn_id!r} has no API key (fix: put the AI/ML API key in its password field)"
        )
    if any(character.isspace() or not character.isprintable() for character in password):
        raise ConfigurationError(  # else the header refuses it with the key in its message
            f"connection {conn_id!r}: the API key holds a space, a line break or a control character "
            "(fix: paste the AI/ML API key alone into the password field; the key is not shown here)"
        )
    tuning = (setting.name for setting in fields(RequestRetry))  # each extra sets the field of its name
    retry = RequestRetry().updated(
        {name: extras[name] for name in tuning if extras.get(name) not in (None, "")}
    )
    try:
        url = base_url(host, port, schema)
    except ConfigurationError as error:
        raise ConfigurationError(f"connection {conn_id!r}: {error}") from None
    # Whichever of the two is set, the other's default follows it: the attempt is never shorter
    # than one read; when both are set, Timeouts refuses an attempt shorter than a read.
    attempt = extra_number(conn_id, extras, "attempt_timeout", _SECONDS, 0.0) or Timeouts.attempt
    read = extra_number(conn_id, extras, "read_timeout", _SECONDS, 0.0) or min(Timeouts.read, attempt)
    if extras.get("attempt_timeout") in (None, ""):
        attempt = max(attempt, read)
    return ClientSettings(
        base_url=url,
        api_key=password,
        model=str(extras.get("model") or DEFAULT_MODEL),
        timeouts=Timeouts(
            connect=extra_number(conn_id, extras, "connect_timeout", _SECONDS, 0.0) or Timeouts.connect,
            read=read,
            attempt=attempt,
        ),
        retry=retry,
        max_reply_bytes=_size(conn_id, extras, "max_reply_bytes", DEFAULT_MAX_REPLY_BYTES),
        billing_base_url=billing_base_url_from_extras(conn_id, extras),
        cap=cap_settings_from_extras(conn_id, extras),
    )

"""What the hook reads from an ``aimlapi`` Airflow connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_o3 import __version__
from airflow_o3.errors import InvalidRequestError
from airflow_o3.retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_BASE_URL = "https://api.aimlapi.com/v1"
DEFAULT_MODEL = "o3-mini"
USER_AGENT = f"airflow-o3/{__version__}"

RETRY_EXTRAS: Mapping[str, str] = {
    "max_attempts": "max_attempts",
    "max_retry_seconds": "max_elapsed",
    "initial_backoff": "initial_backoff",
    "max_backoff": "max_backoff",
    "max_retry_after": "max_retry_after",
}
"""Connection extras that tune the retry policy, and the :class:`RetryPolicy` field each sets."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for the service.

    :param connect: to open the connection.
    :param read: between two bytes of the reply; a high reasoning effort can think for minutes
        before the first byte, so the default is generous.
    """

    connect: float = 10.0
    read: float = 600.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.read <= 0:
            raise InvalidRequestError(f"timeouts {self} (fix: use seconds greater than 0)")


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to send a request, read once from the connection."""

    base_url: str
    api_key: str = field(repr=False)
    model: str = DEFAULT_MODEL
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @property
    def models_url(self) -> str:
        return f"{self.base_url}/models"

    def headers(self, client_request_id: str | None = None) -> dict[str, str]:
        """Request headers; they hold the key, so they are never logged or put in an error."""
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if client_request_id:
            headers["X-Client-Request-Id"] = client_request_id
        return headers


def base_url(host: str | None, port: int | None, schema: str | None) -> str:
    """The service's base URL from the connection's host, port and schema fields.

    A host with a scheme (``http://127.0.0.1:8765/v1``) is the base URL as it stands; a bare host
    (``api.aimlapi.com``) becomes ``https://<host>[:port]/<schema or v1>``; no host means the service.
    """
    host = (host or "").strip().rstrip("/")
    if not host:
        return DEFAULT_BASE_URL
    if "://" in host:
        return host
    netloc = f"{host}:{port}" if port else host
    return f"https://{netloc}/{(schema or 'v1').strip('/')}"


def _number(extras: Mapping[str, Any], name: str, default: float) -> float:
    value = extras.get(name)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(
            f"connection extra {name}={value!r} is not a number (fix: set it to seconds, e.g. 600)"
        ) from None


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

    :raises InvalidRequestError: no API key, or an extra that is not a number.
    """
    if not password:
        raise InvalidRequestError(
            f"connection {conn_id!r} has no API key (fix: put the AI/ML API key in its password field)"
        )
    retry = RetryPolicy().updated(
        {
            field_name: extras[extra]
            for extra, field_name in RETRY_EXTRAS.items()
            if extras.get(extra) not in (None, "")
        }
    )
    return ClientSettings(
        base_url=base_url(host, port, schema),
        api_key=password,
        model=str(extras.get("model") or DEFAULT_MODEL),
        timeouts=Timeouts(
            connect=_number(extras, "connect_timeout", Timeouts.connect),
            read=_number(extras, "read_timeout", Timeouts.read),
        ),
        retry=retry,
    )

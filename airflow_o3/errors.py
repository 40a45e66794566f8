"""Exceptions raised by airflow-o3.

Every error says what happened and what to do about it. HTTP errors also carry the status code, the
service's own message and its request id, so a failed 3 a.m. run leaves a message a person can act on.
No message ever contains the API key: the hook never puts headers into an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_QUOTED_CHARACTERS = 500
"""The most of a service's message an error or a log line quotes; the rest is cut."""

REQUEST_ID_CHARACTERS = 128
"""The most of an id the service sends (request id, completion id, model name) that is quoted."""

_BEARER = re.compile(r"\b(bearer)\s+[^\s\"'<>,;]+", re.IGNORECASE)


def quotable(text: str, limit: int = MAX_QUOTED_CHARACTERS) -> str:
    """``text`` fit to quote in an error or a log line: every ``Bearer <token>`` replaced by
    ``Bearer ***`` (a proxy may echo the request's Authorization header), then cut to ``limit``
    characters in all, saying how many were left out (so doing it twice changes nothing)."""
    if len(text) <= limit and "bearer" not in text.lower():  # the common case, without the regex
        return text
    text = _BEARER.sub(r"\1 ***", text)
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(f"... ({len(text)} more characters not shown)"))
    return f"{text[:keep]}... ({len(text) - keep} more characters not shown)"


class O3Error(Exception):
    """Base class of every error airflow-o3 raises."""

    retryable: bool = False


class InvalidRequestError(O3Error, ValueError):
    """The request was refused locally, before anything was sent (and before anything was paid)."""


class ConfigurationError(InvalidRequestError):
    """A connection or a setting is unusable (no API key, a host with credentials, an extra or a retry
    setting that is no number...): fix the connection or the setting, not the request. Nothing was sent.

    A subclass of :class:`InvalidRequestError` for one release, so ``except InvalidRequestError``
    still catches it.
    """


@dataclass(frozen=True)
class HttpFailure:
    """What the service said about a failed call.

    The message and the request id are made :func:`quotable` here, the one place every error of
    every path passes through: no bearer token, and at most ~500 characters of the service's words.
    """

    status: int | None
    message: str
    request_id: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", quotable(str(self.message)))
        if self.request_id is not None:
            object.__setattr__(self, "request_id", quotable(str(self.request_id), REQUEST_ID_CHARACTERS))


class ServiceError(O3Error):
    """The service answered with an error status, or could not be reached.

    :ivar failure: the status, the service's message and its request id.
    :ivar attempts: how many requests were sent for this call, once the retries gave up.
    :ivar elapsed: seconds spent over all attempts, once the retries gave up.
    """

    fix: str = ""

    def __init__(
        self,
        failure: HttpFailure,
        *,
        attempts: int | None = None,
        elapsed: float | None = None,
        conn_id: str | None = None,
    ) -> None:
        self.failure = failure
        self.attempts = attempts
        self.elapsed = elapsed
        self.conn_id = conn_id
        super().__init__(self._describe())

    @property
    def status(self) -> int | None:
        """The HTTP status of the failure, when there was one."""
        return self.failure.status

    def _describe(self) -> str:
        status = f"HTTP {self.failure.status}" if self.failure.status is not None else "no HTTP status"
        parts = [f"{type(self).__name__} ({status}): {self.failure.message}"]
        if self.failure.request_id:
            parts.append(f"request id {self.failure.request_id}")
        if self.attempts is not None and self.elapsed is not None:
            parts.append(f"gave up after {self.attempts} attempt(s) over {self.elapsed:.1f}s")
        if self.fix:
            connection = f"connection {self.conn_id!r}" if self.conn_id else "the Airflow connection"
            parts.append("Fix: " + self.fix.format(connection=connection))
        return ". ".join(parts)

    def _copy(self, failure: HttpFailure | None = None, **changes: Any) -> ServiceError:
        settings = {"attempts": self.attempts, "elapsed": self.elapsed, "conn_id": self.conn_id, **changes}
        return type(self)(failure or self.failure, **settings)

    def without(self, secrets: Sequence[str]) -> ServiceError:
        """The same error, with each of ``secrets`` (an API key in its plain, JSON and repr forms)
        replaced by ``***`` wherever the service echoed it."""
        message, request_id = self.failure.message, self.failure.request_id or ""
        for secret in secrets:
            message, request_id = message.replace(secret, "***"), request_id.replace(secret, "***")
        return self._copy(replace(self.failure, message=message, request_id=request_id or None))

    def after_attempts(self, attempts: int, elapsed: float) -> ServiceError:
        """The same error, saying how many attempts were made over how long."""
        return self._copy(attempts=attempts, elapsed=elapsed)

    def for_connection(self, conn_id: str) -> ServiceError:
        """The same error, naming the Airflow connection whose settings the fix is about."""
        return self._copy(conn_id=conn_id)


class AuthenticationError(ServiceError):
    """401: the API key is missing, wrong or expired."""

    fix = "check the API key (the password field) of {connection}"


class OutOfCreditsError(ServiceError):
    """403: the AI/ML API account has no credits left."""

    fix = "top up the credits of the AI/ML API account whose key {connection} holds, or use another key"


class BadRequestError(ServiceError):
    """400, 404 or 422: the service refused the request as sent; sending it again would not help."""

    fix = "correct the parameter the service names; 404 means a wrong base URL or a retired model"


class RateLimitedError(ServiceError):
    """429: a rate or concurrency limit; retried after the time the service asks for."""

    retryable = True
    fix = "lower the concurrency or the request rate, or raise the limits of the AI/ML API account"


class ServerError(ServiceError):
    """408, 409 or 5xx: the service or its upstream failed; retried with backoff."""

    retryable = True
    fix = "this is on the service's side; the call is retried, and a task retry can try again later"


class ConnectError(ServiceError):
    """The service could not be reached, or the connection broke before a reply came."""

    retryable = True
    fix = "check the base URL of {connection} and the network path from the worker to the service"


class RedirectError(ServiceError):
    """A 3xx: the base URL points somewhere that redirects. Redirects are never followed, so the
    prompt and the key are never sent to another address, and a redirect is not retried."""

    fix = "set the base URL (host) of {connection} to the address the service answers at itself"


class TlsError(ConnectError):
    """The TLS handshake failed: a plain-HTTP server behind an ``https://`` base URL, or a
    certificate the worker does not trust. Not retried: asking again would fail the same way."""

    retryable = False
    fix = (
        "write http:// in the base URL of {connection} if the server speaks plain HTTP; otherwise "
        "check the server's certificate, or point REQUESTS_CA_BUNDLE at the CA that signed it"
    )


class RequestTimeoutError(ServiceError):
    """No reply within the read timeout; a high reasoning effort can take minutes."""

    retryable = True
    fix = "raise the read timeout (extra `read_timeout` of {connection}, or the operator's `read_timeout`)"


class AttemptTimeoutError(RequestTimeoutError):
    """One attempt outlasted the attempt timeout (bytes trickling in, or only keep-alive comments).

    Retried like a read timeout, within the retry settings' ``max_retry_seconds``.
    """

    fix = (
        "raise the attempt timeout (extra `attempt_timeout` of {connection}) if replies this slow "
        "are expected; otherwise check the proxies between the worker and the service"
    )


class BadResponseError(ServiceError):
    """A 2xx whose body is not JSON, or breaks the contract (no `choices`, say)."""

    fix = "this is a fault of the service or of a proxy in between; report the request id to AI/ML API"


class ReplyTooLargeError(BadResponseError):
    """A reply larger than the size limit: it is not read further, and not asked for again (it may
    have been paid for)."""

    fix = "raise the extra `max_reply_bytes` of {connection} if replies this large are expected"


class StreamCutError(BadResponseError):
    """A streamed reply broke off after some of it had arrived: an error, never a partial answer.

    The hook does not send the request again itself (the text so far is already in the task log),
    but an Airflow task retry may.
    """

    fix = (
        "a task retry asks again; if streams keep breaking, check proxy and load-balancer idle "
        "timeouts between the worker and the service"
    )


class CompletionError(O3Error):
    """The call succeeded but gave no usable answer: no text, a refusal, or a content filter."""


class RefusalError(CompletionError):
    """The model refused to give the structured output the task asked for."""


class StructuredOutputError(CompletionError):
    """The reply is not JSON, is cut off, or does not match the task's schema."""


class ToolCallError(CompletionError):
    """The model called a tool with arguments that are not valid JSON."""


def error_class_for_status(status: int) -> type[ServiceError]:
    """The exception class for an HTTP error status."""
    if status in (408, 409) or status >= 500:
        return ServerError
    return {401: AuthenticationError, 403: OutOfCreditsError, 429: RateLimitedError}.get(
        status, BadRequestError
    )


class DailyBudgetExceededError(O3Error):
    """The connection's daily cap (extra ``daily_budget_usd``) is reached: no new request starts
    until the next UTC day. Final: a task retry today would meet the same cap."""


class LedgerUnavailableError(O3Error):
    """The daily spend ledger could not be read or written, so the cap cannot be kept: no request
    starts. Retryable: nothing was paid, and the storage may be back by the task's next try."""

    retryable = True


class BalanceUnavailableError(O3Error):
    """The account balance could not be read (billing host unreachable, a refused key, a reply of
    the wrong shape). ``retryable`` follows the cause: a timeout may pass, a 401 will not."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class InsufficientBalanceError(O3Error):
    """A batch with ``min_balance_usd`` did not start: its estimated cost would leave less than
    that on the account. Final: nothing was sent, and a retry would find the same balance."""

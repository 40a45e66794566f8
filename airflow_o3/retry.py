"""One set of request retry settings for every call path: sync, async, streaming and batch.

What is retried and for how long: docs/reliability.md. An error says itself whether it is worth
retrying (:attr:`~airflow_o3.errors.O3Error.retryable`); this module only waits and counts, on tenacity.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from airflow_o3.deprecations import warn_renamed
from airflow_o3.errors import ConfigurationError, O3Error, ServiceError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, init=False)
class RequestRetry:
    """How one HTTP request is retried when the service is busy or failing (Airflow's own task
    retries, ``retries=`` and ``retry_policy=``, are another matter: they run the whole task again).

    :param max_attempts: requests sent at most for one call, the first included (1 = no retry).
    :param max_retry_seconds: seconds after which no new attempt starts.
    :param initial_backoff: the longest wait before the first retry, in seconds; it doubles with each
        attempt, and the actual wait is drawn at random below it (full jitter), so workers that failed
        together do not retry together.
    :param max_backoff: the longest backoff between two attempts, in seconds.
    :param max_retry_after: the longest wait honoured when the service asks for one, in seconds.
    :param max_elapsed: the old name of ``max_retry_seconds``, accepted until 0.4.0 with a warning.
    """

    max_attempts: int = 5
    max_retry_seconds: float = 900.0
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def __init__(
        self,
        max_attempts: int = 5,
        max_retry_seconds: float = 900.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 120.0,
        *,
        max_elapsed: float | None = None,
    ) -> None:
        if max_elapsed is not None:
            warn_renamed("max_elapsed", "max_retry_seconds", "RequestRetry")
            max_retry_seconds = max_elapsed
        object.__setattr__(self, "max_attempts", max_attempts)
        object.__setattr__(self, "max_retry_seconds", max_retry_seconds)
        object.__setattr__(self, "initial_backoff", initial_backoff)
        object.__setattr__(self, "max_backoff", max_backoff)
        object.__setattr__(self, "max_retry_after", max_retry_after)
        self._check()

    def _check(self) -> None:
        if type(self.max_attempts) is not int or self.max_attempts < 1:
            raise ConfigurationError(
                f"retry setting max_attempts is {self.max_attempts!r}: not a whole number of 1 or more "
                "(fix: use e.g. 5; 1 means no retry)"
            )
        for name in ("max_retry_seconds", "initial_backoff", "max_backoff", "max_retry_after"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(
                    f"retry setting {name} is {value!r}: not a finite number of 0 or more "
                    f"seconds (fix: use e.g. {getattr(RequestRetry, name):g})"
                )

    @property
    def max_elapsed(self) -> float:
        """The old name of :attr:`max_retry_seconds`, kept for one release."""
        warn_renamed("max_elapsed", "max_retry_seconds", "RequestRetry")
        return self.max_retry_seconds

    def updated(self, overrides: Mapping[str, Any] | None) -> RequestRetry:
        """These settings with some replaced (from connection extras or an operator argument).

        :raises ConfigurationError: a name that is not a setting, or a value of the wrong type.
        """
        if not overrides:
            return self
        if "max_elapsed" in overrides and "max_retry_seconds" in overrides:
            raise ConfigurationError(
                "retry settings name both max_retry_seconds and its old name max_elapsed "
                "(fix: keep max_retry_seconds only)"
            )
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known - {"max_elapsed"})  # the old name: __init__ warns
        if unknown:
            raise ConfigurationError(
                f"unknown retry setting(s) {', '.join(unknown)} (fix: use {', '.join(sorted(known))})"
            )
        return replace(self, **{name: _number(name, value) for name, value in overrides.items()})


def _number(name: str, value: Any) -> Any:
    """A retry setting's value as a number; ``_check`` then checks its range."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value  # refused, with the setting's name and the value as given, by _check
    if not math.isfinite(number) or (name == "max_attempts" and not number.is_integer()):
        return value
    return int(number) if name == "max_attempts" else number


def __getattr__(name: str) -> Any:
    """``RetryPolicy``, the old name of :class:`RequestRetry`, kept for one release with a warning."""
    if name == "RetryPolicy":
        warn_renamed("RetryPolicy", "RequestRetry", "airflow_o3.retry")
        return RequestRetry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, O3Error) and error.retryable


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("Attempt %d failed (%s); retrying in %.2fs", state.attempt_number, error, wait)
    from airflow_o3.observability import record_retry

    record_retry()


def _arguments(policy: RequestRetry, started: float) -> dict[str, Any]:
    """Tenacity's settings for the retries of a call that began at ``started`` (``time.monotonic()``).

    The time limit counts from the first attempt, which runs before tenacity (so its own
    ``stop_before_delay`` would count from too late).
    """
    backoff = wait_random_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, ServiceError) and error.failure.retry_after is not None:
            return min(error.failure.retry_after, policy.max_retry_after)
        return float(backoff(state))

    def stop(state: RetryCallState) -> bool:
        too_late = time.monotonic() + state.upcoming_sleep >= started + policy.max_retry_seconds
        return state.attempt_number >= policy.max_attempts or too_late

    def gave_up(state: RetryCallState) -> Any:
        """Raise the last error; a service error says how many attempts were made over how long."""
        assert state.outcome is not None  # tenacity gives up only after an attempt
        error = state.outcome.exception()
        if isinstance(error, ServiceError):
            raise error.after_attempts(state.attempt_number, time.monotonic() - started) from error
        return state.outcome.result()  # raises that error as it is

    return {
        "stop": stop,
        "wait": wait,
        "retry": retry_if_exception(_is_retryable),
        "before_sleep": _log_retry,
        "retry_error_callback": gave_up,
    }


def _replay(first: Exception, call: Callable[[], T]) -> Callable[[], T]:
    """The call tenacity retries: it raises the first attempt's error again if that error is
    retryable (so tenacity counts, logs and waits for it as its own attempt 1), then calls ``call``.

    :raises Exception: ``first`` at once, if it is not retryable.
    """
    if not _is_retryable(first):
        raise first
    pending = [first]

    def attempt() -> T:
        if pending:
            raise pending.pop()
        return call()

    return attempt


def call_with_retries(
    policy: RequestRetry, call: Callable[[], T], *, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Run ``call`` under ``policy``; a retryable error that runs out of attempts says how many were made.

    The first attempt runs bare (most calls end there); tenacity takes over at its first retryable
    failure, with that failure as its attempt 1, so attempts, waits and time limits count the same.
    """
    started = time.monotonic()
    try:
        return call()
    except Exception as error:  # re-raised at once unless it is retryable
        replay = _replay(error, call)
    return Retrying(sleep=sleep, **_arguments(policy, started))(replay)


async def acall_with_retries(policy: RequestRetry, call: Callable[[], Awaitable[T]]) -> T:
    """The async twin of :func:`call_with_retries`, for the triggerer."""
    started = time.monotonic()
    try:
        return await call()
    except Exception as error:  # re-raised at once unless it is retryable
        replay = _replay(error, call)

    async def attempt() -> T:  # tenacity awaits coroutine functions only, not a lambda's coroutine
        return await replay()

    return await AsyncRetrying(**_arguments(policy, started))(attempt)

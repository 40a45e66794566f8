"""One rate controller for every request of a batch, so the batch slows down as a whole.

Without it, each of 64 workers that meets a 429 backs off on its own while the other 63 keep sending,
and the service keeps refusing. What it does for the DAG author is in README.md ("Rate control shared
by the whole batch"). The hook calls :meth:`RateController.acquire` right before each POST (retries
included), :meth:`RateController.observe` with each answer's status and headers, and waits between
retries with :meth:`RateController.sleep`; :meth:`RateController.stop` ends every wait at once.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from airflow_o3.errors import O3Error

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_o3.retry import RequestRetry

SERVICE_RATE_SHARE = 0.95
"""Pace at this share of the rate the service announces, to stay clear of its refusals."""

DECREASE = 0.8
"""The pace is multiplied by this on a 429 (at most once per :data:`DECREASE_EVERY` seconds)."""

DECREASE_EVERY = 1.0
"""Seconds during which further 429s (the same burst) do not cut the pace again."""

INCREASE_PER_SECOND = 2.0
"""Requests per second added to the pace per second of successful calls, up to the caps."""

MIN_RATE = 0.05
"""The slowest pace, in requests per second (one every 20 s)."""

PAUSE_WITHOUT_HINT = 0.5
"""Seconds every worker waits after a 429 that names no wait."""


class StoppedError(O3Error):
    """The batch stopped (task killed or timed out, a budget or a failed item) before this request
    started: nothing was sent for it, nothing was paid."""


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of an answer, names lowercased (one pass over the headers)."""
    return {name.lower(): value for name, value in headers.items() if name[:12].lower() == "x-ratelimit-"}


def announced_rate(limits: Mapping[str, str], kind: str) -> float | None:
    """The refill rate per second the service announces for ``requests`` or ``tokens``, if it does.

    :param limits: the answer's :func:`rate_limit_headers`.
    :param kind: ``requests`` or ``tokens``. From ``x-ratelimit-limit-<kind>``,
        ``x-ratelimit-remaining-<kind>`` and ``x-ratelimit-reset-<kind>`` (the time until the bucket
        is full again): ``(limit - remaining) / reset``.
    """
    from airflow_o3.response import duration_seconds

    limit = _number(limits.get(f"x-ratelimit-limit-{kind}"))
    remaining = _number(limits.get(f"x-ratelimit-remaining-{kind}"))
    reset = limits.get(f"x-ratelimit-reset-{kind}")
    seconds = duration_seconds(reset) if reset is not None else None
    if limit is None or remaining is None or not seconds or limit <= remaining:
        return None
    return (limit - remaining) / seconds


class RateController:
    """Decides when each request of a batch may start; share one between all the batch's workers.

    :param requests_per_minute: a fixed cap on the requests started per minute (retries included).
    :param tokens_per_minute: a fixed cap on the tokens billed per minute (prompt plus completion,
        hidden reasoning included), held over time: the tokens of each reply delay the next start.
    :param admit: called before every request; it raises to refuse one (the batch's budget check).
    :param retry: the retry policy of the batch's calls: a 429's wait is capped at its
        ``max_retry_after`` and its ``max_retry_seconds`` (the defaults of :class:`RequestRetry` without one).
    :param clock: the monotonic clock, in seconds.
    :param sleep: how to wait, in seconds; by default a wait that :meth:`stop` ends at once.
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        admit: Callable[[], None] | None = None,
        retry: RequestRetry | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if retry is None:
            from airflow_o3.retry import RequestRetry

            retry = RequestRetry()
        self._max_pause = min(retry.max_retry_after, retry.max_retry_seconds)
        self.stopping = threading.Event()
        """Set when the batch stops: every wait ends, and no request starts any more."""
        self._request_cap = requests_per_minute / 60 if requests_per_minute else math.inf
        self._token_cap = tokens_per_minute / 60 if tokens_per_minute else math.inf
        self._admit = admit
        self._clock = clock
        self._sleep = sleep or self.sleep
        self._lock = threading.Lock()
        self._service_requests = math.inf
        self._service_tokens = math.inf
        self._rate = self._request_cap
        self._next_start = 0.0
        self._tokens_paid_until = 0.0
        self._paused_until = 0.0
        self._pauses = 0
        self._last_decrease = -math.inf
        self._recent_starts: deque[float] = deque()
        self.rate_limited = 0
        """429 answers seen."""
        self.waited = 0.0
        """Seconds the workers spent waiting for their turn, added up."""

    @property
    def rate(self) -> float:
        """The current pace in requests per second (``inf``: no limit known yet)."""
        return self._rate

    def stop(self) -> None:
        """Stop the batch: waiting workers wake, and no request starts any more (thread-safe)."""
        self.stopping.set()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the batch stops meanwhile (the wait between two retries)."""
        self.stopping.wait(seconds)

    def _check(self) -> None:
        if self._admit is not None:
            self._admit()
        if self.stopping.is_set():
            raise StoppedError("not sent: the batch stopped before this request started")

    def acquire(self) -> None:
        """Wait for this request's turn.

        :raises StoppedError: the batch stopped, before the wait or during it.
        Raises whatever ``admit`` raises too, before waiting and after.
        """
        while True:
            self._check()
            with self._lock:
                now = self._clock()
                start = max(now, self._next_start, self._paused_until, self._tokens_paid_until)
                self._next_start = start + (1 / self._rate if self._rate < math.inf else 0.0)
                pauses = self._pauses
                if start <= now:
                    self._started(now)
                    return
                self.waited += start - now
            self._sleep(start - now)
            with self._lock:
                now = self._clock()
                if self._pauses == pauses or self._paused_until <= now:
                    self._started(now)
                    break
        self._check()

    def _started(self, now: float) -> None:
        self._recent_starts.append(now)
        while self._recent_starts and self._recent_starts[0] < now - 1.0:
            self._recent_starts.popleft()

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from an answer: the limits it announces, a 429's wait, a success."""
        from airflow_o3.response import retry_after

        limits = rate_limit_headers(headers)
        requests_rate = announced_rate(limits, "requests") if limits else None
        tokens_rate = announced_rate(limits, "tokens") if limits else None
        hint = retry_after(headers) if status == 429 else 0.0  # never NaN, infinite or negative
        wait = min(PAUSE_WITHOUT_HINT if hint is None else hint, self._max_pause)
        with self._lock:
            now = self._clock()
            if requests_rate is not None:
                self._service_requests = requests_rate
            if tokens_rate is not None:
                self._service_tokens = tokens_rate
            ceiling = min(self._request_cap, self._service_requests * SERVICE_RATE_SHARE)
            if status == 429:
                self.rate_limited += 1
                self._paused_until = max(self._paused_until, now + wait)
                self._pauses += 1
                if now - self._last_decrease >= DECREASE_EVERY:
                    self._last_decrease = now
                    if self._rate <= ceiling:  # faster than the service announces: paced at its rate below
                        recent = len(self._recent_starts) or 1.0
                        self._rate = max(MIN_RATE, min(self._rate, recent) * DECREASE)
            elif 200 <= status < 300 and self._rate < ceiling:
                self._rate = min(ceiling, self._rate + INCREASE_PER_SECOND / self._rate)
            self._rate = min(self._rate, ceiling)

    def paid(self, tokens: int) -> None:
        """Count the tokens a reply was billed for against the token pace."""
        with self._lock:
            rate = min(self._token_cap, self._service_tokens * SERVICE_RATE_SHARE)
            if tokens > 0 and rate < math.inf:
                self._tokens_paid_until = max(self._tokens_paid_until, self._clock()) + tokens / rate

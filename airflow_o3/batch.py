"""Send many prepared calls concurrently from one task: the engine of ``O3MiniBatchOperator``.

Worker threads share the hook (its pooled HTTP session and its one retry policy) and one
:class:`~airflow_o3.ratecontrol.RateController`, and take the items in input order. Each item goes
through :meth:`O3MiniHook.send`, so the response cache, the typed errors and the metrics are those of
a single call. This module only decides who sends what, when to stop, and what to report.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from airflow_o3.budget import BudgetExceededError, Spend
from airflow_o3.errors import (
    AuthenticationError,
    DailyBudgetExceededError,
    InvalidRequestError,
    LedgerUnavailableError,
    O3Error,
    OutOfCreditsError,
)
from airflow_o3.ratecontrol import StoppedError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_o3.cache import ResponseCache
    from airflow_o3.hooks.o3mini import O3MiniHook, PreparedCall
    from airflow_o3.ratecontrol import RateController
    from airflow_o3.response import Completion


ItemErrorPolicy = Literal["fail", "continue"]
ITEM_ERROR_POLICIES: tuple[str, ...] = ("fail", "continue")
MAX_CONCURRENCY = 512

ACCOUNT_ERRORS = (AuthenticationError, OutOfCreditsError, DailyBudgetExceededError, LedgerUnavailableError)
"""Errors no item can avoid (a wrong key, no credits, the connection's daily cap reached or its
ledger unreachable): they stop the batch whatever the policy."""

NOT_SENT = (BudgetExceededError, StoppedError)
"""Errors of the items that were never sent (the budget was reached, the batch stopped)."""

STOP_POLL = 0.1
"""Seconds between two looks at whether the batch was stopped from outside (task kill)."""


@dataclass(frozen=True)
class BatchLimits:
    """How hard a batch may push the service.

    :param max_concurrency: requests in flight at once (1 to 512). The wall time of a batch is about
        ``items x latency / max_concurrency`` until a rate limit is reached.
    :param requests_per_minute: a fixed cap on the requests started per minute, retries included,
        whatever the service would allow (to leave room for other users of the same key).
    :param tokens_per_minute: a fixed cap on the tokens billed per minute (prompt plus completion,
        hidden reasoning included), held over time as each reply's tokens come in.
    """

    max_concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        if type(self.max_concurrency) is not int or not 1 <= self.max_concurrency <= MAX_CONCURRENCY:
            raise InvalidRequestError(
                f"max_concurrency is {self.max_concurrency!r} (fix: use a whole number from 1 to "
                f"{MAX_CONCURRENCY})"
            )
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise InvalidRequestError(f"{name} is {value!r} (fix: use a number above 0, or None)")


@dataclass(frozen=True)
class ItemFailure:
    """Why one item has no result."""

    index: int
    error: O3Error

    def record(self) -> dict[str, Any]:
        """Plain JSON for XCom: index, error type, message, HTTP status when there was one."""
        return {
            "index": self.index,
            "error": type(self.error).__name__,
            "message": str(self.error),
            "status": getattr(self.error, "status", None),
        }


class BatchItemError(O3Error):
    """An item failed and the batch stopped (policy ``fail``, or an account error every item would hit).

    Retryable when the item's error is (a 429 or 5xx that outlived the retries): a task retry may
    succeed, and with the response cache on it pays only for the items that had not completed. Final
    otherwise (a 400, a wrong key): a retry would meet the same error.
    """

    def __init__(self, failure: ItemFailure, message: str) -> None:
        self.failure = failure
        self.retryable = failure.error.retryable
        super().__init__(message)


class BatchStoppedError(O3Error):
    """The batch was stopped from outside (the task was killed) before every item was done.

    Retryable: whether the task tries again is Airflow's decision (a worker shutting down, say); with
    the response cache on, a retry pays only for the items that had not completed.
    """

    retryable = True


@dataclass
class BatchOutcome:
    """What a batch produced, in input order.

    :ivar values: each item's result, ``None`` where it failed or was not sent.
    :ivar completions: each item's completion (without its raw body), ``None`` where there is none.
    :ivar failures: the items without a result, by index, with why.
    :ivar budget_reached: the budget limit that stopped the batch, in words, if one did.
    """

    values: list[Any]
    completions: list[Completion | None]
    failures: dict[int, ItemFailure]
    spend: Spend
    elapsed: float = 0.0
    rate_limited: int = 0
    budget_reached: str | None = None

    def counts(self) -> tuple[int, int, int, int]:
        """How many items completed, failed after sending, were not sent, and came from the cache."""
        completions = [completion for completion in self.completions if completion is not None]
        not_sent = sum(isinstance(f.error, NOT_SENT) for f in self.failures.values())
        from_cache = sum(completion.from_cache for completion in completions)
        return len(completions), len(self.failures) - not_sent, not_sent, from_cache

    def summary(self) -> dict[str, Any]:
        """Counts, time and spend as plain JSON, for XCom."""
        completed, failed, not_sent, from_cache = self.counts()
        return {
            "items": len(self.values),
            "succeeded": len(self.values) - len(self.failures),
            "failed": failed,
            "not_sent": not_sent,
            "from_cache": from_cache,
            "elapsed_s": round(self.elapsed, 3),
            "items_per_s": round(completed / self.elapsed, 2) if self.elapsed else None,
            "rate_limited": self.rate_limited,
            "spend": self.spend.record(),
            "budget_reached": self.budget_reached,
        }


@dataclass
class BatchRun:
    """One batch: its workers send every call, up to ``limits.max_concurrency`` at once, and gather the
    results in input order.

    :param hook: built with ``rate_control=control`` and a pool of ``limits.max_concurrency``.
    :param calls: the items' requests; ``None`` for an item refused before sending, whose reason is
        in ``failures``.
    :param reply: turns a completion into the item's result; raises :class:`CompletionError` for a
        reply that is no answer, which then counts as the item's failure.
    :param spend: the task's spend and budget, which ``control`` checks before every request.
    """

    hook: O3MiniHook
    calls: Sequence[PreparedCall | None]
    failures: Mapping[int, ItemFailure]
    reply: Callable[[Completion], Any]
    limits: BatchLimits
    control: RateController
    spend: Spend
    cache: ResponseCache | None
    on_item_error: ItemErrorPolicy
    log: Any  # the task's logger: a stdlib or a structlog (Airflow 3) one
    progress_interval: float

    def __post_init__(self) -> None:
        self.outcome = BatchOutcome(
            [None] * len(self.calls), [None] * len(self.calls), dict(self.failures), self.spend
        )
        self.stop = self.control.stopping
        self.halted = False
        self.finished = threading.Event()
        self.lock = threading.Lock()
        self.next = self.workers = 0
        self.stopping_failure: ItemFailure | None = None
        self.crash: BaseException | None = None

    def take(self) -> int | None:
        """The next item to send, or ``None``: all taken, the batch stopped, or the budget is reached."""
        with self.lock:
            while self.next < len(self.calls) and self.calls[self.next] is None:
                self.next += 1  # refused before sending, already among the failures
            if self.stop.is_set() or self.next >= len(self.calls):
                return None
            if (reached := self.spend.reached()) is not None:
                self.outcome.budget_reached = reached
                self.halt()
                return None
            index = self.next
            self.next += 1
            return index

    def work(self) -> None:
        try:
            while (index := self.take()) is not None:
                self.one(index)
        except BaseException as error:  # a bug, not an item's failure: stop and raise it in the task
            self.crash = error
            self.halt()
        finally:
            with self.lock:
                self.workers -= 1
                if not self.workers:
                    self.finished.set()

    def one(self, index: int) -> None:
        call = self.calls[index]
        assert call is not None, "take() skips the items refused before sending"
        try:
            completion = self.hook.send(call, cache=self.cache)
            if not completion.from_cache:
                self.spend.add(completion)
                self.control.paid(completion.usage.get("total_tokens") or 0)
            value = self.reply(completion)
        except O3Error as error:
            self.failed(ItemFailure(index, error))
        else:
            with self.lock:
                self.outcome.values[index] = value
                self.outcome.completions[index] = replace(completion, raw={})

    def failed(self, failure: ItemFailure) -> None:
        with self.lock:
            self.outcome.failures[failure.index] = failure
            if isinstance(failure.error, BudgetExceededError):
                self.outcome.budget_reached = self.outcome.budget_reached or self.spend.reached()
                self.halt()
            elif isinstance(failure.error, StoppedError):
                return
            elif self.on_item_error == "fail" or isinstance(failure.error, ACCOUNT_ERRORS):
                self.stopping_failure = self.stopping_failure or failure
                self.halt()

    def halt(self) -> None:
        """Stop the batch from inside (budget, failed item, crash): no request starts any more."""
        self.halted = True
        self.stop.set()

    def killed(self) -> bool:
        """The batch was stopped from outside (:meth:`RateController.stop`, by the task's ``on_kill``)."""
        return self.stop.is_set() and not self.halted

    def progress(self, started: float, label: str = "Batch progress") -> str:
        """The progress line; its counts are those of the ``batch`` XCom (done = succeeded + failed)."""
        with self.lock:
            completed, failed, not_sent, from_cache = self.outcome.counts()
        done, total = completed + failed, len(self.calls)
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed else 0.0
        eta = f"{(total - done - not_sent) / rate:.0f}s" if rate else "unknown"
        counts = [f"{failed:,} failed"]
        counts += [f"{not_sent:,} not sent"] if not_sent else []
        counts += [f"{from_cache:,} from cache"] if from_cache else []
        return (
            f"{label}: {done:,}/{total:,} items done ({', '.join(counts)}), {rate:.1f} items/s, "
            f"ETA {eta}; {self.spend.summary()}; {self.control.rate_limited:,} rate limited (429)"
        )

    def run(self) -> BatchOutcome:
        """Start the workers and wait for them, logging progress.

        :raises BatchItemError: an item failed and the policy (or an account error) stopped the batch.
        :raises BudgetExceededError: the budget was reached and its ``on_exceeded`` is ``fail``.
        :raises BatchStoppedError: ``control`` was stopped (the task killed); this returns within
            :data:`STOP_POLL` seconds, without waiting for the requests in flight.
        """
        started = time.monotonic()
        self.workers = min(self.limits.max_concurrency, len(self.calls) - len(self.failures))
        if not self.workers:
            self.finished.set()
        for number in range(self.workers):
            threading.Thread(target=self.work, name=f"o3-batch-{number}", daemon=True).start()
        try:
            self._wait(started)
        except BaseException:  # the task is being stopped (execution_timeout): every worker leaves
            self.halt()
            self.log.info("%s", self.progress(started, "Batch stopped"))
            raise
        outcome, total = self.outcome, len(self.calls)
        if self.killed():
            self.log.info("%s", self.progress(started, "Batch stopped"))
            raise BatchStoppedError(
                f"the batch was stopped (the task was killed) after {outcome.counts()[0]:,} of {total:,} "
                f"items completed; {_resume(self.cache is not None)}"
            )
        outcome.elapsed = time.monotonic() - started
        outcome.rate_limited = self.control.rate_limited
        if outcome.budget_reached is not None and self.stopping_failure is None and self.crash is None:
            unsent = BudgetExceededError("not sent: the task's budget was reached before this item")
            for index in range(self.next, total):
                outcome.failures.setdefault(index, ItemFailure(index, unsent))
        self.log.info("%s", self.progress(started, "Batch finished"))
        if self.crash is not None:
            raise self.crash
        if self.stopping_failure is not None:
            raise _stopped_by(self.stopping_failure, outcome, self.cache is not None)
        if outcome.budget_reached is not None and self.spend.budget.on_exceeded == "fail":
            raise BudgetExceededError(
                f"the task's budget was reached ({outcome.budget_reached}): {self.spend.summary()}; "
                f"{outcome.counts()[0]:,} of {total:,} items completed, the others were not sent"
            )
        return outcome

    def _wait(self, started: float) -> None:
        """Log a progress line every ``progress_interval`` seconds until the workers are done or the
        batch is stopped from outside (then at once: the requests in flight are not waited for)."""
        next_line = time.monotonic() + self.progress_interval
        while not self.finished.wait(max(0.0, min(STOP_POLL, next_line - time.monotonic()))):
            if self.killed():
                return
            if time.monotonic() >= next_line:
                self.log.info("%s", self.progress(started))
                next_line = time.monotonic() + self.progress_interval


def _resume(cached: bool) -> str:
    return (
        "with the response cache on, a retry of the task pays only for the items that did not complete"
        if cached
        else "turn the response cache on (cache='on') so that a retry pays only for the items that did "
        "not complete"
    )


def _stopped_by(failure: ItemFailure, outcome: BatchOutcome, cached: bool) -> BatchItemError:
    done = outcome.counts()[0]
    resume = (
        _resume(cached)
        if failure.error.retryable
        else "a retry of the task would not help (it would meet the same error), so the task fails "
        "without retrying: fix the cause"
        + (", and a new run pays only for the items that did not complete" if cached else "")
    )
    why = (
        "an error every item would meet"
        if isinstance(failure.error, ACCOUNT_ERRORS)
        else "on_item_error is 'fail' (use 'continue' to record failures and go on)"
    )
    return BatchItemError(
        failure,
        f"item {failure.index} of {len(outcome.values):,} failed: {failure.error}. The batch stopped "
        f"({why}) after {done:,} items completed; {resume}",
    )

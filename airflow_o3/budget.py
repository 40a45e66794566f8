"""A task's spending limit: tokens and dollars, counted as replies arrive, checked before each request.

Only what is paid counts: a reply read from the response cache costs nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from airflow_o3.contract import LIST_PRICE
from airflow_o3.errors import InvalidRequestError, O3Error
from airflow_o3.response import amount

if TYPE_CHECKING:
    from airflow_o3.response import Completion

BudgetAction = Literal["fail", "stop"]
BUDGET_ACTIONS: tuple[str, ...] = get_args(BudgetAction)


class BudgetExceededError(O3Error):
    """The task's budget was reached: no new request is sent. A task retry would only spend more."""


@dataclass(frozen=True)
class Budget:
    """The most a task may spend.

    :param max_total_tokens: tokens billed at most (prompt plus completion, hidden reasoning included).
    :param max_cost_usd: dollars spent at most.
    :param on_exceeded: once a limit is crossed no new request starts (those in flight finish and
        count); then ``"fail"`` fails the task, ``"stop"`` ends it with the results so far, the items
        not sent left ``None`` and listed in ``errors``.
    """

    max_total_tokens: int | None = None
    max_cost_usd: float | None = None
    on_exceeded: BudgetAction = "fail"

    def __post_init__(self) -> None:
        if self.max_total_tokens is not None and (
            type(self.max_total_tokens) is not int or self.max_total_tokens < 1
        ):
            raise InvalidRequestError(
                f"budget max_total_tokens is {self.max_total_tokens!r} (fix: use a whole number, 1 or more)"
            )
        if self.max_cost_usd is not None and (
            not isinstance(self.max_cost_usd, int | float) or self.max_cost_usd <= 0
        ):
            raise InvalidRequestError(
                f"budget max_cost_usd is {self.max_cost_usd!r} (fix: use a number of dollars above 0)"
            )
        if self.on_exceeded not in BUDGET_ACTIONS:
            raise InvalidRequestError(
                f"budget on_exceeded is {self.on_exceeded!r} (fix: use 'fail' or 'stop')"
            )

    @property
    def limited(self) -> bool:
        """Whether the budget sets any limit."""
        return self.max_total_tokens is not None or self.max_cost_usd is not None


def cost_usd(completion: Completion) -> float:
    """The service's cost figure for a call, or an estimate at the list price when it sent none.

    A figure that is no amount (NaN, infinite, negative) counts as 0, so a spend never goes down.
    """
    if completion.cost_usd is not None:
        return float(amount(completion.cost_usd) or 0)
    usage = completion.usage
    prompt = amount(usage.get("prompt_tokens")) or 0
    cached = min(prompt, amount((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
    return float(LIST_PRICE.usd(prompt, cached, amount(usage.get("completion_tokens")) or 0))


class Spend:
    """What a task has paid so far; thread-safe, shared by the workers of a batch.

    :param budget: the limits that :meth:`check` enforces.
    """

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.requests = 0
        self.tokens = 0
        self.usd = 0.0
        self._lock = threading.Lock()

    def add(self, completion: Completion) -> None:
        """Count a reply; one read from the response cache was not paid for, and adds nothing."""
        if completion.from_cache:
            return
        tokens = int(amount(completion.usage.get("total_tokens")) or 0)
        usd = cost_usd(completion)
        with self._lock:
            self.requests += 1
            self.tokens += tokens
            self.usd += usd

    def reached(self) -> str | None:
        """Which limit is reached, in words, or ``None``."""
        budget = self.budget
        if budget.max_total_tokens is not None and self.tokens >= budget.max_total_tokens:
            return f"{self.tokens:,} tokens of max_total_tokens {budget.max_total_tokens:,}"
        if budget.max_cost_usd is not None and self.usd >= budget.max_cost_usd:
            return f"${self.usd:.6f} of max_cost_usd ${budget.max_cost_usd:.6f}"
        return None

    def check(self) -> None:
        """Refuse a new request once a limit is reached.

        :raises BudgetExceededError: naming the limit and the spend so far.
        """
        if (reached := self.reached()) is not None:
            raise BudgetExceededError(f"the task's budget is reached ({reached}); {self.summary()}")

    def summary(self) -> str:
        """The spend so far, in words."""
        return f"spent {self.tokens:,} tokens, ${self.usd:.6f}, over {self.requests:,} paid request(s)"

    def record(self) -> dict[str, Any]:
        """The spend as plain JSON, for XCom."""
        return {"requests": self.requests, "total_tokens": self.tokens, "usd": round(self.usd, 9)}

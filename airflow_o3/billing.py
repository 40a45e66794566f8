"""The account balance: ``GET {billing_base_url}/v1/billing/balance``, and what a batch may spend of it.

The service publishes the balance on a billing host of its own (``https://billing.aimlapi.com``,
the connection extra ``billing_base_url`` to change it), asked with the connection's key. It
answers in credits; dollars are credits over the credits-per-dollar rate that the paid replies
showed (their ``credits_used`` against their ``usd_spent``, kept by the daily ledger): the rate is
derived, never assumed, and a balance is shown in credits only until a paid reply has shown it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_o3.errors import BalanceUnavailableError, ConfigurationError, O3Error, quotable

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_o3.hooks.o3mini import O3MiniHook

DEFAULT_BILLING_BASE_URL = "https://billing.aimlapi.com"
BALANCE_PATH = "/v1/billing/balance"
BALANCE_SECONDS = 30.0
"""The most a balance read may take in all, connect to last byte."""
ESTIMATED_COMPLETION_TOKENS = 4000
"""Completion tokens (hidden reasoning included) a call is assumed to use when its request sets no
``max_completion_tokens``: a medium-effort answer of a few paragraphs. Set ``max_completion_tokens``
for a firm bound instead of this estimate."""

_NUMBER = (int, float)
_FIELDS: Mapping[str, tuple[str, type | tuple[type, ...]]] = {
    "credits": ("balance", _NUMBER),
    "low": ("lowBalance", bool),
    "low_threshold": ("lowBalanceThreshold", _NUMBER),
    "last_updated": ("lastUpdated", str),
    "auto_debit_status": ("autoDebitStatus", str),
    "status": ("status", str),
    "status_explanation": ("statusExplanation", str),
}
"""Each field of :class:`Balance`: its key in a balance reply (the contract requires them all) and
its JSON types."""


@dataclass(frozen=True)
class Balance:
    """The account's balance, as the billing host reported it.

    :ivar credits: credits left on the account of the key.
    :ivar low: the service's low-balance flag.
    :ivar low_threshold: credits under which the service says the balance is low.
    :ivar last_updated: when the figure was taken (the service's ISO date-time).
    :ivar status: the plan's status (``current``...), and ``status_explanation`` in words.
    :ivar auto_debit_status: whether auto top-up is on (``disabled``...).
    """

    credits: float
    low: bool
    low_threshold: float
    last_updated: str
    status: str
    status_explanation: str
    auto_debit_status: str

    def usd(self, credits_per_usd: float | None) -> float | None:
        """The balance in dollars at ``credits_per_usd``; ``None`` without a rate."""
        return self.credits / credits_per_usd if credits_per_usd else None

    def describe(self, credits_per_usd: float | None) -> str:
        """``balance 10,000,000 credits (about $5.00), low``: what ``test_connection`` shows."""
        usd = self.usd(credits_per_usd)
        dollars = (
            f"about ${usd:,.2f}"
            if usd is not None
            else "dollar value unknown until a paid reply shows the credits-per-dollar rate"
        )
        low = f", LOW (under {self.low_threshold:,.0f} credits)" if self.low else ""
        return (
            f"balance {self.credits:,.0f} credits ({dollars}){low}; plan status {quotable(self.status, 60)}"
        )


def billing_base_url_from_extras(conn_id: str, extras: Mapping[str, Any]) -> str:
    """The billing host's base URL: the extra ``billing_base_url``, else the service's.

    :raises ConfigurationError: not an ``http(s)://`` URL, or one with credentials, a query or a
        fragment (the message does not repeat what is around an ``@``).
    """
    value = str(extras.get("billing_base_url") or "").strip().rstrip("/")
    if not value:
        return DEFAULT_BILLING_BASE_URL
    if "@" in value:
        raise ConfigurationError(
            f"connection {conn_id!r}: the extra billing_base_url has an '@' (fix: remove the "
            "credentials from it; the key in the password field is sent to the billing host)"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(
            f"connection {conn_id!r}: the extra billing_base_url {quotable(value, 200)!r} is not a "
            f"base URL (fix: set it to the billing host alone, e.g. {DEFAULT_BILLING_BASE_URL})"
        )
    return value


def read_balance(hook: O3MiniHook) -> Balance:
    """Ask the billing host of ``hook``'s connection for the balance of its key's account, over the
    hook's transport: within :data:`BALANCE_SECONDS`, no redirect followed, the connection's
    ``max_reply_bytes`` kept. Costs nothing.

    :raises BalanceUnavailableError: the status, the service's words (without the key) and the URL;
        retryable for a timeout, a connection failure, a 429 or a 5xx.
    """
    from airflow_o3.errors import RedirectError, ServiceError

    settings = hook.settings
    url = f"{settings.billing_base_url.rstrip('/')}{BALANCE_PATH}"
    try:
        status, _, body = hook.get_url(url, settings.headers(), seconds=BALANCE_SECONDS)
    except RedirectError as error:
        raise BalanceUnavailableError(
            f"GET {url} answered HTTP {error.failure.status}, a redirect, which is not followed (fix: "
            "set the connection extra billing_base_url to the billing host itself)"
        ) from None
    except ServiceError as error:
        raise BalanceUnavailableError(
            f"GET {url} failed: {error.failure.message} (fix: check the connection extra "
            "billing_base_url and the network path from the worker to the billing host)",
            retryable=error.retryable,
        ) from None
    for secret in {settings.api_key, json.dumps(settings.api_key)[1:-1]}:
        if len(secret) >= 5:
            body = body.replace(secret.encode(), b"***")
    return parse_balance(url, status, body)


def parse_balance(url: str, status: int, body: bytes) -> Balance:
    """The :class:`Balance` of a reply of the billing host.

    :raises BalanceUnavailableError: a status other than 200, or a body not of the contract's shape.
    """
    text = body.decode("utf-8", "replace")
    if status != 200:
        retryable = status in (408, 409, 429) or status >= 500
        raise BalanceUnavailableError(
            f"GET {url} answered HTTP {status}: {quotable(text, 300) or 'no body'}"
            + (" (fix: check the API key of the connection)" if status in (401, 403) else ""),
            retryable=retryable,
        )
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BalanceUnavailableError(
            f"GET {url} answered 200 with a body that is not a JSON object: {quotable(text, 200)}"
        )
    fields: dict[str, Any] = {}
    for name, (key, kind) in _FIELDS.items():
        value: Any = data.get(key)
        usable = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not usable or (isinstance(value, float) and not math.isfinite(value)):
            raise BalanceUnavailableError(
                f"GET {url} answered 200 with no usable {key!r}: {quotable(text, 200)}"
            )
        fields[name] = float(value) if kind is _NUMBER else value
    return Balance(**fields)


def estimate_call_usd(body: Mapping[str, Any]) -> float:
    """What one request may cost at the list price: its text as prompt tokens (4 characters each)
    plus, per choice, its ``max_completion_tokens`` (else :data:`ESTIMATED_COMPLETION_TOKENS`)."""
    from airflow_o3.contract import LIST_PRICE

    prompt_tokens = math.ceil(len(json.dumps(body.get("messages") or [], ensure_ascii=False)) / 4)
    completion = body.get("max_completion_tokens")
    if not isinstance(completion, int) or isinstance(completion, bool) or completion < 1:
        completion = ESTIMATED_COMPLETION_TOKENS
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    return LIST_PRICE.usd(prompt_tokens, 0, completion * choices)


def check_balance_covers(
    balance: Balance,
    credits_per_usd: float | None,
    bodies: Sequence[Mapping[str, Any]],
    min_balance_usd: float,
    conn_id: str,
) -> str:
    """Refuse a batch whose estimated cost would leave less than ``min_balance_usd`` on the account.

    :return: the check in words, for the task log.
    :raises BalanceUnavailableError: the balance's dollar value is unknown (no paid reply yet
        showed the credits-per-dollar rate).
    :raises InsufficientBalanceError: what is left, the estimate, the minimum and the fix.
    """
    from airflow_o3.errors import InsufficientBalanceError

    estimate = sum(estimate_call_usd(body) for body in bodies)
    usd = balance.usd(credits_per_usd)
    if usd is None:
        raise BalanceUnavailableError(
            f"min_balance_usd=${min_balance_usd:,.2f} cannot be checked: the balance of connection "
            f"{conn_id!r} is {balance.credits:,.0f} credits, and no paid reply has yet shown the "
            "credits-per-dollar rate (fix: let one call on this connection run first, with a "
            "ledger_path every worker reaches, or remove min_balance_usd)"
        )
    words = (
        f"the balance of connection {conn_id!r} is about ${usd:,.2f} ({balance.credits:,.0f} credits); "
        f"the {len(bodies):,} request(s) of this batch are estimated at up to ${estimate:,.4f} at the list "
        f"price, which would leave ${usd - estimate:,.2f}, and min_balance_usd is ${min_balance_usd:,.2f}"
    )
    if usd - estimate < min_balance_usd:
        raise InsufficientBalanceError(
            f"the batch did not start, nothing was sent: {words} (fix: top up the AI/ML API account, "
            "send fewer items or set a lower max_completion_tokens, or lower min_balance_usd)"
        )
    return words


def balance_summary(hook: O3MiniHook) -> str:
    """The balance in words for ``test_connection``, or why it is unavailable; never raises."""
    try:
        balance = read_balance(hook)
    except O3Error as error:
        return f"balance unavailable: {error}"
    return balance.describe(hook.ledger.credits_per_usd())


def check_batch_balance(hook: O3MiniHook, bodies: Sequence[Mapping[str, Any]], min_balance_usd: float) -> str:
    """Read the balance of ``hook``'s connection and refuse a batch it does not cover (see
    :func:`check_balance_covers`); nothing is sent to the chat endpoint.

    :return: the check in words, for the task log.
    """
    balance = read_balance(hook)
    return check_balance_covers(balance, hook.ledger.credits_per_usd(), bodies, min_balance_usd, hook.conn_id)

"""What many test files share: fast retry settings, a user message, pointing the default connection.

Import them (``from tests.helpers import FAST_RETRY, USER, point_default_connection``) rather than
copying them: a change of a setting's name or of the connection's shape is then made once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

USER = [{"role": "user", "content": "Name three prime numbers."}]
"""One user message, for tests in which what is asked does not matter."""

FAST_RETRY: dict[str, Any] = {"max_attempts": 3, "initial_backoff": 0.01, "max_backoff": 0.02}
"""Retry settings (``request_retry=``) that retry as the product does, without waiting for real."""

NO_BACKOFF_RETRY: dict[str, Any] = {"max_attempts": 2, "initial_backoff": 0.0, "max_backoff": 0.0}
"""Two attempts, no wait between them: a failure is seen retried once."""


def fast_retry(max_attempts: int) -> dict[str, Any]:
    """:data:`FAST_RETRY` with another number of attempts."""
    return {**FAST_RETRY, "max_attempts": max_attempts}


def point_default_connection(monkeypatch: pytest.MonkeyPatch, host: str, key: str, **extras: Any) -> str:
    """Set ``AIRFLOW_CONN_AIMLAPI_DEFAULT`` to ``host`` (a base URL) with this key and these extras.

    Restored after the test (monkeypatch); returns the JSON value set.
    """
    value = json.dumps({"conn_type": "aimlapi", "host": host, "password": key, "extra": extras})
    monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", value)
    return value


def usage(prompt: int, completion: int, reasoning: int = 0, cached: int = 0) -> dict[str, Any]:
    """A usage object in the contract's shape, to script a reply with (``Reply(usage=usage(...))``)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def list_price_usd(prompt: int, completion: int, cached: int = 0) -> float:
    """What these token counts cost at the list price, the figure the product reports for them."""
    from airflow_o3.contract import LIST_PRICE

    return LIST_PRICE.usd(prompt, cached, completion)


def answer_to(body: dict[str, Any]) -> str:
    """The reply of the ``answering_standin`` fixture's server: ``"Answer to: "`` and the request's last
    message, so that a test tells which reply went with which request without the kit's own wording."""
    return f"Answer to: {body['messages'][-1]['content']}"

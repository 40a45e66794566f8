"""The hook and the connection's money: test_connection shows the balance; the daily cap stops requests."""

from __future__ import annotations

import asyncio

import pytest

from airflow_o3.cache import CacheSettings, ResponseCache
from airflow_o3.errors import DailyBudgetExceededError
from airflow_o3.hooks import O3MiniHook
from airflow_o3.testing.billing import billing_base_url
from tests.helpers import USER, point_default_connection

KEY = "sk-cap-secret-0123456789"


@pytest.fixture
def connect(o3_standin, monkeypatch, tmp_path):
    """Point the default connection at the stand-in (chat and billing), with these extras."""

    def point(**extras: object) -> O3MiniHook:
        extras = {"billing_base_url": billing_base_url(o3_standin), "ledger_path": str(tmp_path), **extras}
        point_default_connection(monkeypatch, o3_standin.base_url, KEY, **extras)
        return O3MiniHook()

    return point


def test_test_connection_shows_the_balance_in_credits_then_in_dollars_once_a_reply_showed_the_rate(
    connect, o3_standin
):
    ok, message = connect().test_connection()
    assert ok
    assert "balance 10,000,000 credits (dollar value unknown until a paid reply shows" in message
    assert o3_standin.chat_requests == []
    paid = connect().chat(USER)
    ok, message = connect().test_connection()
    rate = paid.credits_used / paid.cost_usd
    assert f"balance 10,000,000 credits (about ${10_000_000 / rate:,.2f})" in message
    assert KEY not in message


def test_test_connection_shows_the_low_balance_flag(connect, o3_standin):
    o3_standin.billing.credits = 5_000
    ok, message = connect().test_connection()
    assert ok
    assert "balance 5,000 credits" in message
    assert "LOW (under 10,000 credits)" in message


def test_a_failing_billing_host_leaves_test_connection_ok_saying_why_the_balance_is_unavailable(
    connect, o3_standin
):
    o3_standin.billing.fail_with = 503
    ok, message = connect().test_connection()
    assert ok
    assert "'o3-mini' is listed" in message
    assert "balance unavailable: GET " in message
    assert "/v1/billing/balance answered HTTP 503" in message
    assert KEY not in message


def test_an_unreachable_billing_host_leaves_test_connection_ok(connect):
    ok, message = connect(billing_base_url="http://127.0.0.1:9").test_connection()
    assert ok
    assert "balance unavailable: GET http://127.0.0.1:9/v1/billing/balance failed" in message


def test_once_the_day_spend_reaches_the_cap_no_request_starts_and_the_error_names_cap_and_spend(
    connect, o3_standin
):
    hook = connect(daily_budget_usd=0.000001)
    hook.chat(USER)  # spent nothing yet today: it starts, and is paid
    with pytest.raises(DailyBudgetExceededError) as raised:
        connect(daily_budget_usd=0.000001).chat([{"role": "user", "content": "Another question"}])
    assert len(o3_standin.chat_requests) == 1, "the second request never started"
    message = str(raised.value)
    assert "connection 'aimlapi_default'" in message
    assert "daily_budget_usd $0.000001" in message
    assert "spent on" in message


def test_at_the_cap_a_cached_reply_is_still_served_and_an_uncached_request_refused(
    connect, o3_standin, tmp_path
):
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path / "cache")))
    first = connect(daily_budget_usd=0.000001).chat(USER, cache=cache)
    again = connect(daily_budget_usd=0.000001).chat(USER, cache=cache)
    assert again.from_cache
    assert again.text == first.text
    with pytest.raises(DailyBudgetExceededError):
        connect(daily_budget_usd=0.000001).chat([{"role": "user", "content": "Not cached"}], cache=cache)
    assert len(o3_standin.chat_requests) == 1, "only a request the cache cannot answer is refused"


def test_the_async_path_of_the_triggerer_is_held_by_the_cap_too(connect, o3_standin):
    connect(daily_budget_usd=0.000001).chat(USER)
    hook = connect(daily_budget_usd=0.000001)

    async def send() -> None:
        prepared = hook.prepare(USER)
        async with hook.async_client() as client:
            await hook.asend(prepared, client)

    with pytest.raises(DailyBudgetExceededError, match="daily budget of connection 'aimlapi_default'"):
        asyncio.run(send())
    assert len(o3_standin.chat_requests) == 1

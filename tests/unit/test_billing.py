"""The account balance: read from a billing host (the stand-in's, or hostile ones), and the batch estimate."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

from airflow_o3 import billing
from airflow_o3.billing import (
    ESTIMATED_COMPLETION_TOKENS,
    Balance,
    billing_base_url_from_extras,
    check_balance_covers,
    estimate_call_usd,
    read_balance,
)
from airflow_o3.contract import LIST_PRICE
from airflow_o3.errors import BalanceUnavailableError, InsufficientBalanceError, InvalidRequestError
from airflow_o3.hooks import O3MiniHook
from airflow_o3.testing import StandInServer
from airflow_o3.testing.billing import billing_base_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

KEY = "sk-billing-secret-0123456789"
BALANCE = Balance(
    credits=2_000_000,
    low=False,
    low_threshold=10_000,
    last_updated="2026-11-30T12:00:00Z",
    status="current",
    status_explanation="Balance is current and up to date",
    auto_debit_status="disabled",
)


@pytest.fixture
def read(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Balance]:
    """Read the balance through a hook whose connection has the key and this billing base URL."""

    def balance_at(url: str) -> Balance:
        extra = {"billing_base_url": url}
        connection = {"conn_type": "aimlapi", "host": "http://127.0.0.1:9", "password": KEY, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_BILLING_TEST", json.dumps(connection))
        return read_balance(O3MiniHook("billing_test"))

    return balance_at


class _Quick(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


@contextmanager
def hostile(answer: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A billing host that answers every GET with ``answer``; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answer(self)

        def log_message(self, *args: object) -> None:
            pass

    server = _Quick(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_stand_in_balance_is_read_with_the_key_as_a_typed_reading(read):
    with StandInServer(api_key=KEY) as server:
        server.billing.credits = 5_000
        balance = read(billing_base_url(server))
        (request,) = server.requests
    assert request.method == "GET"
    assert request.path == "/v1/billing/balance"
    assert request.header("Authorization") == f"Bearer {KEY}"
    assert (balance.credits, balance.low, balance.low_threshold) == (5_000, True, 10_000)
    assert balance.status == "current"


def test_a_refused_key_is_a_final_error_naming_the_status_and_the_fix_without_the_key(read):
    with StandInServer(api_key="another-key") as server, pytest.raises(BalanceUnavailableError) as raised:
        read(billing_base_url(server))
    assert "answered HTTP 401" in str(raised.value)
    assert "check the API key" in str(raised.value)
    assert not raised.value.retryable
    assert KEY not in str(raised.value)


def test_a_billing_host_that_echoes_the_key_has_it_blanked_out_of_the_error(read):
    def echo(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = json.dumps({"message": f"bad token {handler.headers['Authorization']}"}).encode()
        handler.send_response(403)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with hostile(echo) as url, pytest.raises(BalanceUnavailableError) as raised:
        read(url)
    assert "HTTP 403" in str(raised.value)
    assert KEY not in str(raised.value)


def test_a_redirect_is_refused_not_followed_naming_the_extra_to_fix(read):
    def redirect(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "http://127.0.0.1:9/steal")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with hostile(redirect) as url, pytest.raises(BalanceUnavailableError) as raised:
        read(url)
    assert "HTTP 302, a redirect, which is not followed" in str(raised.value)
    assert "billing_base_url" in str(raised.value)


def test_a_reply_trickling_in_is_cut_at_the_time_limit(monkeypatch, read):
    monkeypatch.setattr(billing, "BALANCE_SECONDS", 1.0)

    def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(100):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.2)

    started = time.monotonic()
    with hostile(trickle) as url, pytest.raises(BalanceUnavailableError) as raised:
        read(url)
    assert time.monotonic() - started < 5
    assert "not complete within 1s" in str(raised.value)
    assert raised.value.retryable


def test_an_unreachable_billing_host_is_a_retryable_error_naming_the_url(read):
    with pytest.raises(BalanceUnavailableError) as raised:
        read("http://127.0.0.1:9")
    assert "GET http://127.0.0.1:9/v1/billing/balance failed: could not reach" in str(raised.value)
    assert raised.value.retryable


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<html>", "a body that is not a JSON object"),
        (json.dumps({"balance": 5}).encode(), "no usable 'lowBalance'"),
        (json.dumps({**BALANCE.__dict__, "balance": True}).encode(), "no usable 'balance'"),
    ],
)
def test_a_200_not_of_the_contract_shape_is_an_error_saying_what_is_missing(body, fragment, read):
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with hostile(answer) as url, pytest.raises(BalanceUnavailableError, match=fragment):
        read(url)


def test_the_balance_in_words_shows_credits_dollars_at_the_rate_and_the_low_flag():
    assert BALANCE.describe(2_000_000).startswith(
        "balance 2,000,000 credits (about $1.00); plan status current"
    )
    low = Balance(**{**BALANCE.__dict__, "credits": 5_000, "low": True})
    assert "LOW (under 10,000 credits)" in low.describe(2_000_000)
    assert "dollar value unknown until a paid reply shows the credits-per-dollar rate" in BALANCE.describe(
        None
    )


def test_the_estimate_is_the_prompt_plus_max_completion_tokens_per_choice_at_the_list_price():
    body = {"messages": [], "max_completion_tokens": 1000, "n": 2}
    assert estimate_call_usd(body) == pytest.approx(2000 * LIST_PRICE.output, rel=0.01)
    assert estimate_call_usd({"messages": []}) == pytest.approx(
        ESTIMATED_COMPLETION_TOKENS * LIST_PRICE.output, rel=0.01
    )


def test_a_batch_the_balance_does_not_cover_is_refused_naming_balance_estimate_minimum_and_fix():
    bodies = [{"messages": [], "max_completion_tokens": 10_000}] * 10  # ~$0.57
    with pytest.raises(InsufficientBalanceError) as raised:
        check_balance_covers(BALANCE, 2_000_000, bodies, 0.5, "aimlapi_default")
    message = str(raised.value)
    assert "nothing was sent" in message
    assert "about $1.00 (2,000,000 credits)" in message
    assert "estimated at up to $0.57" in message
    assert "min_balance_usd is $0.50" in message
    assert "fix: top up" in message
    assert not raised.value.retryable
    assert "would leave $0.43" in check_balance_covers(BALANCE, 2_000_000, bodies, 0.4, "aimlapi_default")


def test_without_a_known_rate_min_balance_usd_is_refused_with_the_fix():
    with pytest.raises(
        BalanceUnavailableError, match="no paid reply has yet shown the credits-per-dollar rate"
    ):
        check_balance_covers(BALANCE, None, [{"messages": []}], 1.0, "aimlapi_default")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "https://billing.aimlapi.com"),
        ("", "https://billing.aimlapi.com"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
    ],
)
def test_the_billing_base_url_defaults_to_the_documented_host(value, expected):
    assert billing_base_url_from_extras("c", {"billing_base_url": value}) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("https://user:pw@billing.example", "has an '@'"),
        ("billing.aimlapi.com", "is not a base URL"),
        ("https://billing.aimlapi.com?x=1", "is not a base URL"),
    ],
)
def test_a_bad_billing_base_url_is_refused_naming_the_extra(value, fragment):
    with pytest.raises(InvalidRequestError, match="billing_base_url") as raised:
        billing_base_url_from_extras("c", {"billing_base_url": value})
    assert fragment in str(raised.value)
    assert "pw" not in str(raised.value)

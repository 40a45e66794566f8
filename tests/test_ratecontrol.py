from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from airflow_o3.budget import BudgetExceededError
from airflow_o3.hooks import O3MiniHook
from airflow_o3.ratecontrol import (
    DECREASE,
    RateController,
    StoppedError,
    announced_rate,
    rate_limit_headers,
)
from airflow_o3.retry import RequestRetry
from airflow_o3.testing import StandInServer

USER = [{"role": "user", "content": "Name three prime numbers."}]


class FakeClock:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def controller(clock: FakeClock, **kwargs) -> RateController:
    return RateController(clock=clock, sleep=clock.sleep, **kwargs)


def start_times(control: RateController, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        control.acquire()
        times.append(clock.now)
    return times


def test_without_limits_requests_start_at_once(clock):
    assert start_times(controller(clock), clock, 5) == [100.0] * 5


def test_requests_per_minute_spaces_starts_evenly(clock):
    times = start_times(controller(clock, requests_per_minute=120), clock, 4)
    assert times == pytest.approx([100.0, 100.5, 101.0, 101.5])


def test_429_makes_every_worker_wait_out_the_retry_after(clock):
    control = controller(clock)
    control.observe(429, {"retry-after-ms": "300"})
    control.acquire()
    assert clock.now == pytest.approx(100.3)
    assert control.rate_limited == 1
    assert control.waited == pytest.approx(0.3)


def test_429_without_a_hint_still_pauses_briefly(clock):
    control = controller(clock)
    control.observe(429, {})
    control.acquire()
    assert clock.now > 100.0


A_MONTH_AHEAD = format_datetime(datetime.now(UTC) + timedelta(days=30), usegmt=True)
HUGE_WAITS = [
    {"retry-after": "99999"},
    {"retry-after": A_MONTH_AHEAD},
    {"retry-after-ms": "inf"},
    {"retry-after-ms": "nan"},
    {"x-ratelimit-reset-requests": "99999s"},
]


HUGE_WAIT_IDS = ["retry-after-99999", "retry-after-a-month-ahead", "ms-inf", "ms-nan", "reset-99999s"]


@pytest.mark.parametrize("headers", HUGE_WAITS, ids=HUGE_WAIT_IDS)
def test_a_429s_wait_is_capped_by_the_retry_policy(clock, headers):
    policy = RequestRetry(max_retry_after=1, max_retry_seconds=5)
    control = controller(clock, retry=policy)
    control.observe(429, headers)
    control.acquire()
    assert clock.now - 100.0 <= 1.0


def test_a_429s_wait_never_outlasts_the_policys_max_retry_seconds(clock):
    control = controller(clock, retry=RequestRetry(max_retry_after=120, max_retry_seconds=3))
    control.observe(429, {"retry-after": "60"})
    control.acquire()
    assert clock.now == pytest.approx(103.0)


def test_without_a_policy_a_429s_wait_is_capped_at_the_default_max_retry_after(clock):
    control = controller(clock)
    control.observe(429, {"retry-after": "99999"})
    control.acquire()
    assert clock.now - 100.0 == pytest.approx(RequestRetry().max_retry_after)


def test_stop_wakes_a_worker_waiting_out_a_pause_and_it_sends_nothing():
    control = RateController(retry=RequestRetry(max_retry_after=3600, max_retry_seconds=3600))
    control.observe(429, {"retry-after": "3600"})
    raised: list[BaseException] = []

    def worker() -> None:
        try:
            control.acquire()
        except StoppedError as error:
            raised.append(error)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    time.sleep(0.2)
    stopped = time.monotonic()
    control.stop()
    thread.join(2)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < 0.5
    assert len(raised) == 1 and "not sent" in str(raised[0])


def test_a_stopped_controller_starts_no_request_and_cuts_sleeps_short():
    control = RateController()
    control.stop()
    started = time.monotonic()
    control.sleep(60)
    assert time.monotonic() - started < 0.5
    with pytest.raises(StoppedError):
        control.acquire()


def test_429_cuts_the_pace_and_successes_raise_it_again(clock):
    control = controller(clock, requests_per_minute=600)
    assert control.rate == pytest.approx(10)
    start_times(control, clock, 10)
    control.observe(429, {"retry-after": "0"})
    cut = control.rate
    assert cut == pytest.approx(10 * DECREASE)
    control.observe(429, {"retry-after": "0"})
    assert control.rate == cut, "a burst of 429s cuts the pace once"
    for _ in range(20):
        control.observe(200, {})
    assert cut < control.rate <= 10, "successes raise the pace, never above the cap"


def test_announced_limits_set_the_pace_before_any_429(clock):
    control = controller(clock)
    assert control.rate == math.inf
    headers = {
        "x-ratelimit-limit-requests": "50",
        "x-ratelimit-remaining-requests": "49",
        "x-ratelimit-reset-requests": "20ms",
    }
    control.observe(200, headers)
    assert control.rate == pytest.approx(50 * 0.95)
    times = start_times(control, clock, 3)
    assert times[2] - times[1] == pytest.approx(1 / (50 * 0.95))


def test_a_429_that_announces_the_limit_sets_the_pace_to_it_rather_than_below(clock):
    control = controller(clock)
    start_times(control, clock, 64)  # a first burst, before any answer
    burst_429 = {
        "retry-after-ms": "20",
        "x-ratelimit-limit-requests": "50",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    for _ in range(14):
        control.observe(429, burst_429)
    assert control.rate == pytest.approx(50 * 0.95)
    assert control.rate_limited == 14


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "499",
                "x-ratelimit-reset-requests": "120ms",
            },
            500 / 60,
        ),
        (
            {
                "x-ratelimit-limit-tokens": "30000",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "1m0s",
            },
            500.0,
        ),
    ],
)
def test_announced_rate_is_the_bucket_refill_rate(headers, expected):
    kind = "tokens" if "x-ratelimit-limit-tokens" in headers else "requests"
    assert announced_rate(rate_limit_headers(headers), kind) == pytest.approx(expected, rel=0.01)


def test_announced_rate_ignores_missing_or_full_buckets():
    assert announced_rate({}, "requests") is None
    assert rate_limit_headers({"X-RateLimit-Limit-Requests": "5", "Content-Type": "x"}) == {
        "x-ratelimit-limit-requests": "5"
    }
    full = {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "0s",
    }
    assert announced_rate(rate_limit_headers(full), "requests") is None


def test_tokens_per_minute_delays_the_next_start_by_the_tokens_paid(clock):
    control = controller(clock, tokens_per_minute=6000)  # 100 tokens a second
    control.acquire()
    control.paid(250)
    control.acquire()
    assert clock.now == pytest.approx(102.5)


def test_admit_refuses_a_request_before_it_waits(clock):
    def over_budget() -> None:
        raise BudgetExceededError("budget reached")

    control = controller(clock, requests_per_minute=60, admit=over_budget)
    with pytest.raises(BudgetExceededError):
        control.acquire()


def test_threads_share_one_pace():
    control = RateController(requests_per_minute=1200)  # one start every 50 ms
    starts: list[float] = []
    lock = threading.Lock()

    def work(_: int) -> None:
        control.acquire()
        with lock:
            starts.append(time.monotonic())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    starts.sort()
    assert starts[-1] - starts[0] >= 7 * 0.05 * 0.9


@pytest.mark.slow  # waits out the 429s' Retry-After
def test_batch_backs_off_together_on_the_stand_in_servers_429s(monkeypatch):
    """16 workers against a server that takes 20 requests a second: the controller learns the limit
    from the first answers and the 429s stay a handful, where unpaced workers would get hundreds."""
    with StandInServer(max_requests_per_second=20) as server:
        monkeypatch.setenv("AIRFLOW_CONN_AIMLAPI_DEFAULT", server.connection_json())
        control = RateController()
        retry = {"max_attempts": 8, "initial_backoff": 0.05}
        hook = O3MiniHook(request_retry=retry, pool_size=16, rate_control=control)
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda _: hook.chat(USER).text, range(60)))
        elapsed = time.monotonic() - started
    assert all(replies)
    # the server's headers round its remaining tokens down, and a loaded machine delays the answers
    # the rate is learned from, so the learned rate can read somewhat high (up to ~1.13x seen under load)
    assert control.rate <= 20 * 1.25
    assert server.stats["rate_limited"] == control.rate_limited
    assert control.rate_limited < 20, f"{control.rate_limited} 429s"
    # 20 of the 60 fit in the first second's burst; the other 40 at about 19 a second
    assert elapsed > 1.5

from __future__ import annotations

import pytest

from airflow_o3.deprecations import O3DeprecationWarning
from airflow_o3.errors import (
    AuthenticationError,
    ConfigurationError,
    HttpFailure,
    InvalidRequestError,
    RateLimitedError,
    ServerError,
)
from airflow_o3.retry import RequestRetry, call_with_retries


class Flaky:
    def __init__(self, *errors):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def failure(status, retry_after=None):
    return HttpFailure(status, "boom", retry_after=retry_after)


def test_retry_after_is_honoured_and_capped():
    waits = []
    call = Flaky(RateLimitedError(failure(429, 3.0)), RateLimitedError(failure(429, 500.0)))
    policy = RequestRetry(max_retry_after=10.0)
    assert call_with_retries(policy, call, sleep=waits.append) == "ok"
    assert waits == [3.0, 10.0]
    assert call.calls == 3


def test_backoff_is_full_jitter_within_the_cap():
    waits = []
    call = Flaky(*(ServerError(failure(503)) for _ in range(4)))
    call_with_retries(RequestRetry(initial_backoff=1.0, max_backoff=3.0), call, sleep=waits.append)
    assert len(waits) == 4
    assert all(0 <= wait <= 3.0 for wait in waits)
    assert waits[0] <= 1.0  # full jitter: uniform in [0, initial * 2**n], capped


def test_non_retryable_errors_fail_at_once():
    call = Flaky(AuthenticationError(failure(401)))
    with pytest.raises(AuthenticationError) as raised:
        call_with_retries(RequestRetry(), call, sleep=lambda _: None)
    assert call.calls == 1
    assert "gave up" not in str(raised.value)


def test_exhausted_retries_say_how_many_attempts_over_how_long():
    call = Flaky(*(ServerError(failure(500)) for _ in range(5)))
    with pytest.raises(ServerError, match=r"gave up after 3 attempt\(s\) over \d+\.\ds"):
        call_with_retries(RequestRetry(max_attempts=3), call, sleep=lambda _: None)
    assert call.calls == 3


def test_total_time_bounds_the_retries():
    call = Flaky(*(ServerError(failure(500)) for _ in range(5)))
    with pytest.raises(ServerError, match=r"gave up after 1 attempt"):
        call_with_retries(RequestRetry(max_retry_seconds=0.0), call, sleep=lambda _: None)


def test_policy_overrides_are_checked():
    assert RequestRetry().updated({"max_attempts": "2"}).max_attempts == 2
    with pytest.raises(InvalidRequestError, match="unknown retry setting"):
        RequestRetry().updated({"attempts": 2})
    with pytest.raises(InvalidRequestError, match="max_attempts is 0"):
        RequestRetry(max_attempts=0)


def test_the_connection_extras_name_max_retry_seconds_works_in_retry_overrides_too():
    policy = RequestRetry().updated({"max_attempts": "3", "max_retry_seconds": 120})
    assert (policy.max_attempts, policy.max_retry_seconds) == (3, 120.0)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_retry_after", "inf"),
        ("max_retry_seconds", "nan"),
        ("initial_backoff", float("-inf")),
        ("max_backoff", "soon"),
        ("max_attempts", "nan"),
        ("max_attempts", "inf"),
        ("max_attempts", 2.5),
    ],
)
def test_a_retry_setting_that_is_not_a_finite_number_is_refused_naming_it_and_the_fix(setting, value):
    with pytest.raises(InvalidRequestError) as raised:
        RequestRetry().updated({setting: value})
    assert str(raised.value).startswith(f"retry setting {setting} is {value!r}: not a ")
    assert "(fix: use e.g. " in str(raised.value)


def test_a_policy_built_directly_refuses_nan_and_infinity_too():
    with pytest.raises(
        InvalidRequestError, match=r"retry setting max_retry_seconds is nan: .*fix: use e\.g\. 900"
    ):
        RequestRetry(max_retry_seconds=float("nan"))
    with pytest.raises(
        InvalidRequestError, match=r"retry setting max_retry_after is inf: .*fix: use e\.g\. 120"
    ):
        RequestRetry(max_retry_after=float("inf"))


def test_the_old_class_name_retry_policy_still_imports_with_a_deprecation_warning():
    with pytest.warns(O3DeprecationWarning, match="RetryPolicy is renamed RequestRetry"):
        from airflow_o3.retry import RetryPolicy
    assert RetryPolicy is RequestRetry
    assert RetryPolicy(max_attempts=2).max_attempts == 2


def test_the_old_setting_name_max_elapsed_still_works_in_a_dict_with_a_deprecation_warning():
    with pytest.warns(O3DeprecationWarning, match="max_elapsed is renamed max_retry_seconds"):
        retry = RequestRetry().updated({"max_elapsed": "60"})
    assert retry.max_retry_seconds == 60.0
    with pytest.warns(O3DeprecationWarning, match="max_elapsed is renamed max_retry_seconds"):
        assert retry.max_elapsed == 60.0


def test_the_old_keyword_max_elapsed_still_builds_the_settings_with_a_deprecation_warning():
    with pytest.warns(O3DeprecationWarning, match="RequestRetry: max_elapsed is renamed max_retry_seconds"):
        retry = RequestRetry(max_retry_after=1, max_elapsed=5)
    assert retry == RequestRetry(max_retry_after=1, max_retry_seconds=5)


def test_max_elapsed_and_max_retry_seconds_together_are_refused_naming_the_one_to_keep():
    with pytest.raises(ConfigurationError, match="keep max_retry_seconds only"):
        RequestRetry().updated({"max_elapsed": 1, "max_retry_seconds": 2})


def test_a_bad_retry_setting_is_a_configuration_error_that_except_invalid_request_error_still_catches():
    with pytest.raises(ConfigurationError, match="retry setting max_backoff is 'soon'"):
        RequestRetry().updated({"max_backoff": "soon"})
    assert issubclass(ConfigurationError, InvalidRequestError)

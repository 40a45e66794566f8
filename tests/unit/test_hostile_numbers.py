"""Numbers from the service are checked: NaN, infinities, negatives and huge values never crash a
paid reply (Airflow would retry and pay again) and never lower a budget's spend.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``-Infinity`` literals, ``1e400`` as infinity and a
400-digit integer as an ``int`` too big for a float: each is sent here as raw bytes.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from airflow_o3.budget import Budget, Spend, cost_usd
from airflow_o3.errors import BadResponseError
from airflow_o3.observability import record_completion, summary_line
from airflow_o3.response import Choice, Completion, error_for, parse_response, retry_after, usage_over
from airflow_o3.streaming import StreamAssembler

HOSTILE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "-5", "-0.5", "1" + "0" * 400, "true", '"12"']
"""JSON texts of figures that are no count or amount."""

REPLY = (
    '{"id": "chatcmpl-1", "object": "chat.completion", "created": %(created)s, "model": "o3-mini",'
    ' "choices": [{"index": %(index)s, "finish_reason": "stop",'
    ' "message": {"role": "assistant", "content": "The incidents were minor."}}],'
    ' "usage": {"prompt_tokens": %(prompt)s, "completion_tokens": %(completion)s, "total_tokens": %(total)s,'
    ' "prompt_tokens_details": {"cached_tokens": %(cached)s},'
    ' "completion_tokens_details": {"reasoning_tokens": %(reasoning)s}},'
    ' "meta": {"usage": {"credits_used": %(credits)s, "usd_spent": %(usd)s}}}'
)
GOOD = {
    "created": "1762343744",
    "index": "0",
    "prompt": "5",
    "completion": "70",
    "total": "75",
    "cached": "0",
    "reasoning": "64",
    "credits": "900",
    "usd": "0.00045",
}


def reply(headers: dict[str, str] | None = None, *, meta: bool = True, **figures: str) -> Completion:
    """The reply with these figures (JSON texts); ``meta=False`` leaves out ``meta`` (cost in headers)."""
    text = REPLY % {**GOOD, **figures}
    if not meta:
        text = text[: text.index(', "meta"')] + "}"
    return parse_response(200, headers or {}, text.encode())


def _paid_and_reported(completion: Completion) -> Spend:
    """What the hook and the operator do with a reply: count it, report it, publish its usage."""
    spend = Spend(Budget(max_total_tokens=1_000_000, max_cost_usd=1.0))
    spend.add(completion)
    summary_line(completion, latency=1.0, client_request_id=None)
    record_completion(completion, latency=1.0, tags={"model": "o3-mini"})
    json.dumps(usage_over([completion, completion]), allow_nan=False)
    json.dumps(completion.raw, allow_nan=False)
    spend.check()
    assert spend.usd >= 0 and spend.tokens >= 0
    return spend


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["prompt", "completion", "total", "cached", "reasoning"])
def test_a_token_count_that_is_no_count_is_ignored_with_a_warning_and_the_text_delivered(
    field, value, caplog
):
    with caplog.at_level(logging.WARNING, logger="airflow_o3.response"):
        completion = reply(**{field: value})
    assert completion.text == "The incidents were minor."
    assert "is not a count; it is ignored" in caplog.text
    for number in _numbers(completion.usage_record()):
        assert math.isfinite(number) and 0 <= number <= 2**53
    _paid_and_reported(completion)


def _numbers(record: object) -> list[float]:
    if isinstance(record, dict):
        return [number for value in record.values() for number in _numbers(value)]
    return [record] if isinstance(record, int | float) else []


@pytest.mark.parametrize("value", HOSTILE)
def test_a_created_that_is_no_time_is_ignored_with_a_warning(value, caplog):
    with caplog.at_level(logging.WARNING, logger="airflow_o3.response"):
        completion = reply(created=value)
    assert completion.created is None
    assert completion.text == "The incidents were minor."
    assert "created" in caplog.text
    _paid_and_reported(completion)


@pytest.mark.parametrize("value", [*HOSTILE, "1.5"])
def test_a_choice_index_that_is_no_index_is_a_final_bad_response_error(value):
    with pytest.raises(BadResponseError, match=r"choices\[0\]\.index") as raised:
        reply(index=value)
    assert raised.value.retryable is False


@pytest.mark.parametrize(
    "value", [value for value in HOSTILE if value != '"12"']
)  # text is read, as a header's
@pytest.mark.parametrize("field", ["usd", "credits"])
def test_a_cost_in_the_body_that_is_no_amount_is_ignored_and_never_lowers_the_spend(field, value, caplog):
    with caplog.at_level(logging.WARNING, logger="airflow_o3.response"):
        completion = reply(**{field: value})
    assert (completion.cost_usd if field == "usd" else completion.credits_used) is None
    assert "is not an amount; it is ignored" in caplog.text
    spend = _paid_and_reported(completion)
    assert spend.usd == pytest.approx(cost_usd(completion)) and spend.usd > 0


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-0.5", "9" * 400])
def test_a_cost_header_that_is_no_amount_is_ignored(value):
    completion = reply({"x-aimlapi-usd-spent": value, "x-aimlapi-credits-used": value}, meta=False)
    assert completion.cost_usd is None and completion.credits_used is None
    assert _paid_and_reported(completion).usd > 0  # the list-price estimate from the tokens


def test_a_bad_cost_in_the_body_falls_back_to_a_good_header():
    completion = reply({"x-aimlapi-usd-spent": "0.002"}, usd="NaN")
    assert completion.cost_usd == 0.002


@pytest.mark.parametrize("cost", [-1.0, math.nan, math.inf, -math.inf])
def test_spend_never_counts_a_negative_or_nan_cost(cost):
    spend = Spend(Budget(max_cost_usd=0.01))
    spend.add(reply())
    before = spend.usd
    spend.add(
        Completion(
            id="x",
            model="o3-mini",
            created=None,
            choices=(Choice(index=0, text="hi", finish_reason="stop"),),
            usage={"total_tokens": math.nan, "prompt_tokens": -7},
            cost_usd=cost,
        )
    )
    assert spend.usd == before and spend.tokens == 75
    spend.add(reply(usd="0.02"))
    assert spend.reached() is not None


def test_a_huge_integer_beyond_pythons_digit_limit_is_a_bad_response_error():
    with pytest.raises(BadResponseError, match="not JSON"):
        reply(total="9" * 5000)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "-inf"}, None),
        ({"Retry-After": "1e400"}, None),
        ({"retry-after-ms": "1e400"}, None),
        ({"retry-after-ms": "NaN"}, None),
        ({"retry-after-ms": "inf", "Retry-After": "2"}, 2.0),
        ({"retry-after-ms": "nan", "x-ratelimit-reset-requests": "1s"}, 1.0),
        ({"x-ratelimit-reset-requests": "9" * 400 + "s"}, None),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "86400000"}, 86400000.0),
    ],
)
def test_retry_after_is_never_nan_infinite_or_negative(headers, expected):
    assert retry_after(headers) == expected


def test_retry_after_a_far_http_date_is_returned_as_given():
    far = datetime.now(UTC) + timedelta(days=3650)
    wait = retry_after({"Retry-After": format_datetime(far, usegmt=True)})
    assert wait is not None and math.isfinite(wait) and wait > 3600 * 24 * 3000
    assert retry_after({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}) > 0


def test_a_429_with_an_infinite_retry_after_carries_no_wait():
    error = error_for(429, {"Retry-After": "Infinity"}, b'{"error": {"message": "slow down"}}')
    assert error.failure.retry_after is None


def test_summary_and_metrics_survive_a_completion_holding_nan_and_infinity():
    completion = Completion(
        id="x",
        model="o3-mini",
        created=None,
        choices=(Choice(index=0, text="hi", finish_reason="stop"),),
        usage={"prompt_tokens": math.nan, "completion_tokens": math.inf, "total_tokens": -1},
        cost_usd=math.nan,
    )
    line = summary_line(completion, latency=1.0, client_request_id=None)
    assert "tokens_in=- " in line and "cost_usd=unreported" in line
    record_completion(completion, latency=1.0, tags={"model": "o3-mini"})
    assert json.dumps(usage_over([completion]), allow_nan=False)


CHUNK = (
    '{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "o3-mini",'
    ' "choices": [{"index": %s, "finish_reason": null, "delta": {"role": "assistant", "content": "Hi"}}]}'
)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-1", "1e400", "1.5"])
def test_a_stream_chunk_index_that_is_no_index_is_a_bad_response_error(value):
    stream = StreamAssembler(200, {})
    with pytest.raises(BadResponseError, match="index"):
        stream.feed(CHUNK % value)


@pytest.mark.parametrize("value", ["NaN", "-Infinity", "-1"])
def test_a_stream_tool_call_index_that_is_no_index_is_a_bad_response_error(value):
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "o3-mini",
        "choices": [
            {"index": 0, "finish_reason": None, "delta": {"tool_calls": [{"function": {"name": "f"}}]}}
        ],
    }
    text = json.dumps(chunk).replace('[{"function"', f'[{{"index": {value}, "function"')
    with pytest.raises(BadResponseError, match="tool call's index"):
        StreamAssembler(200, {}).feed(text)


def test_a_stream_whose_usage_holds_nan_delivers_the_text_without_it():
    stream = StreamAssembler(200, {})
    stream.feed((CHUNK % "0").replace('"created": 1', '"created": NaN'))
    stream.feed(
        '{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "o3-mini", "choices": [],'
        ' "usage": {"prompt_tokens": 5, "completion_tokens": Infinity, "total_tokens": NaN}}'
    )
    stream.feed("[DONE]")
    completion = stream.completion()
    assert completion.text == "Hi"
    assert completion.usage == {"prompt_tokens": 5}
    assert completion.created is None
    _paid_and_reported(completion)


def test_a_figure_that_is_long_text_is_quoted_short_and_without_tokens(caplog):
    caplog.set_level(logging.WARNING)
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": "Bearer sk-live-echo " + "z" * 10_000},
        "meta": {"usage": {"usd_spent": "Bearer sk-live-cost " + "z" * 10_000}},
    }
    completion = parse_response(200, {}, json.dumps(body).encode())
    assert completion.text == "ok"
    assert "sk-live" not in caplog.text
    assert all(len(record.getMessage()) < 300 for record in caplog.records)

"""The per-call summary line and the Airflow metrics, with ``Stats`` patched and the stand-in server."""

from __future__ import annotations

import re
from datetime import timedelta
from unittest import mock

import pytest

from airflow_o3.cache import CacheSettings, ResponseCache
from airflow_o3.errors import AuthenticationError, InvalidRequestError, RateLimitedError
from airflow_o3.hooks import O3MiniHook
from airflow_o3.observability import error_kind, summary_line
from airflow_o3.testing import HttpError, RateLimited, Reply
from tests.helpers import FAST_RETRY as FAST
from tests.helpers import USER

USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 900,
    "total_tokens": 1020,
    "prompt_tokens_details": {"cached_tokens": 64},
    "completion_tokens_details": {"reasoning_tokens": 768},
}
SUMMARY = re.compile(r"o3-mini call: (?P<fields>.*?client_request_id=\S+)")  # AF3 appends [logger] loc=...


@pytest.fixture
def stats():
    with mock.patch("airflow_o3.observability.Stats") as patched:
        yield patched


@pytest.fixture
def hook(o3_standin_connection):
    return O3MiniHook(request_retry=FAST)


def counters(stats) -> dict[str, int]:
    """``{metric: total count}`` over every ``Stats.incr`` call."""
    totals: dict[str, int] = {}
    for call in stats.incr.call_args_list:
        name = call.args[0]
        count = call.args[1] if len(call.args) > 1 else call.kwargs.get("count", 1)
        totals[name] = totals.get(name, 0) + count
    return totals


def summary_fields(text: str) -> list[dict[str, str]]:
    return [dict(pair.split("=", 1) for pair in m["fields"].split()) for m in SUMMARY.finditer(text)]


def test_a_call_sends_token_cost_and_latency_metrics_tagged_with_the_model(
    hook, o3_standin_connection, stats
):
    o3_standin_connection.script(Reply(content="2, 3, 5", usage=USAGE))
    completion = hook.chat(USER)

    assert counters(stats) == {
        "airflow_o3.calls": 1,
        "airflow_o3.tokens.prompt": 120,
        "airflow_o3.tokens.cached": 64,
        "airflow_o3.tokens.completion": 900,
        "airflow_o3.tokens.reasoning": 768,
        "airflow_o3.cost_microusd": round(completion.cost_usd * 1_000_000),
    }
    stats.gauge.assert_called_once_with(
        "airflow_o3.cost_usd", completion.cost_usd, tags={"model": completion.model}
    )
    ((name, latency), kwargs) = stats.timing.call_args
    assert name == "airflow_o3.latency"
    assert isinstance(latency, timedelta) and timedelta(0) < latency < timedelta(seconds=30)
    assert kwargs == {"tags": {"model": "o3-mini-2025-01-31"}}
    for call in stats.incr.call_args_list:
        assert call.kwargs["tags"] == {"model": "o3-mini-2025-01-31"}


def test_a_call_logs_one_summary_line_with_every_field(hook, o3_standin_connection, capsys):
    o3_standin_connection.script(Reply(content="2, 3, 5", usage=USAGE))
    completion = hook.chat(USER, client_request_id="dag:task:run:t1")

    (fields,) = summary_fields(capsys.readouterr().out)
    assert fields == {
        "model": "o3-mini-2025-01-31",
        "latency_s": fields["latency_s"],
        "tokens_in": "120",
        "tokens_in_cached": "64",
        "tokens_out": "900",
        "tokens_reasoning": "768",
        "cost_usd": f"{completion.cost_usd:.6f}",
        "from_cache": "false",
        "finish_reason": "stop",
        "request_id": completion.request_id,
        "client_request_id": "dag:task:run:t1",
    }
    assert 0 < float(fields["latency_s"]) < 30


def test_retries_are_counted_and_the_call_is_summarised_once(hook, o3_standin_connection, stats, capsys):
    o3_standin_connection.script(RateLimited(retry_after=0), HttpError(503))
    hook.chat(USER)
    assert counters(stats)["airflow_o3.retries"] == 2
    assert counters(stats)["airflow_o3.calls"] == 1
    assert len(summary_fields(capsys.readouterr().out)) == 1


@pytest.mark.parametrize(
    ("script", "error", "metric"),
    [
        ((HttpError(401),), AuthenticationError, "airflow_o3.errors.authentication"),
        ((RateLimited(retry_after=0),) * 3, RateLimitedError, "airflow_o3.errors.rate_limited"),
    ],
)
def test_a_failed_call_counts_one_error_of_its_kind(
    hook, o3_standin_connection, stats, script, error, metric
):
    o3_standin_connection.script(*script)
    with pytest.raises(error):
        hook.chat(USER)
    errors = {name: count for name, count in counters(stats).items() if ".errors." in name}
    assert errors == {metric: 1}
    assert "airflow_o3.calls" not in counters(stats)
    stats.timing.assert_not_called()


def test_a_cache_hit_is_summarised_as_free_and_adds_no_tokens(
    hook, o3_standin_connection, stats, capsys, tmp_path
):
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path)))
    hook.chat(USER, cache=cache)
    stats.reset_mock()
    capsys.readouterr()
    hook.chat(USER, cache=cache)

    assert counters(stats) == {"airflow_o3.cache_hits": 1}
    (fields,) = summary_fields(capsys.readouterr().out)
    assert (fields["from_cache"], fields["cost_usd"]) == ("true", "0")
    assert len(o3_standin_connection.chat_requests) == 1


def test_unreported_values_show_as_a_dash_or_unreported(hook, o3_standin_connection):
    from airflow_o3.response import completion_from_body

    completion = completion_from_body(
        {"id": "x", "model": "o3-mini", "choices": [{"index": 0, "message": {"content": "hi"}}]}, {}
    )
    line = summary_line(completion, latency=0.5, client_request_id=None)
    assert "tokens_in=- " in line
    assert "cost_usd=unreported " in line
    assert line.endswith("request_id=- client_request_id=-")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RateLimitedError, "rate_limited"),
        (AuthenticationError, "authentication"),
        (InvalidRequestError, "invalid_request"),
        (TimeoutError, "timeout"),
    ],
)
def test_error_kinds_are_snake_case_class_names(error, kind):
    instance = error.__new__(error)
    assert error_kind(instance) == kind

"""O3MiniBatchOperator run directly (``execute`` with a stub context) against the stand-in server."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_o3.batch import BatchItemError, BatchStoppedError
from airflow_o3.errors import InvalidRequestError, ServerError
from airflow_o3.operators import O3MiniBatchOperator
from airflow_o3.testing import HttpError, RateLimited, Reply, Stall, StandInServer, stub_context
from tests.contract import validate_request_body
from tests.helpers import FAST_RETRY, answer_to

ROWS = [{"company": f"Company {n}", "note": "{{ 7 * 6 }} is data"} for n in range(12)]
PROMPT = "Row {{ index }}: industry of {{ item.company }}? ({{ item.note }})"


@pytest.fixture
def o3_standin(answering_standin):
    """Every reply names the prompt it answers (``answer_to``), so the order of the results shows."""
    return answering_standin


@pytest.fixture
def one_call(o3_standin_connection) -> int:
    """The tokens billed for one of these prompts (all rows have the same length), as the hook says."""
    from airflow_o3.hooks import O3MiniHook

    prompt = prompt_of(0)
    tokens = O3MiniHook().chat([{"role": "user", "content": prompt}]).usage["total_tokens"]
    o3_standin_connection.clear()
    return tokens


def batch(**kwargs) -> O3MiniBatchOperator:
    arguments = {
        "task_id": "enrich",
        "items": ROWS,
        "prompt": PROMPT,
        "request_retry": FAST_RETRY,
        "limits": {"max_concurrency": 4},
        "progress_interval": 0.05,
        **kwargs,
    }
    return O3MiniBatchOperator(**arguments)


def run(operator: O3MiniBatchOperator) -> tuple[list, dict]:
    context = stub_context()
    result = operator.execute(context)
    return result, context["ti"].xcoms


def prompt_of(index: int) -> str:
    """The prompt the batch renders for ``ROWS[index]``."""
    row = ROWS[index]
    return f"Row {index}: industry of {row['company']}? ({row['note']})"


def expected_reply(index: int) -> str:
    return answer_to({"messages": [{"role": "user", "content": prompt_of(index)}]})


def test_replies_come_back_in_input_order_whatever_order_they_finish_in(o3_standin_connection):
    o3_standin_connection.script(Stall(0.3))  # the first request sent answers last
    result, xcoms = run(batch())
    assert result == [expected_reply(index) for index in range(len(ROWS))]
    assert xcoms["batch"]["succeeded"] == len(ROWS)
    assert xcoms["errors"] == []


def test_item_values_are_data_never_rendered_again(o3_standin_connection):
    run(batch())
    for request in o3_standin_connection.chat_requests:
        validate_request_body(request.body, strict=True)
        assert "{{ 7 * 6 }} is data" in request.body["messages"][-1]["content"]


def test_system_prompt_and_parameters_go_with_every_item(o3_standin_connection):
    run(batch(system_prompt="Answer for row {{ index }} only.", reasoning_effort="low"))
    bodies = sorted(
        (r.body for r in o3_standin_connection.chat_requests), key=lambda b: b["messages"][1]["content"]
    )
    assert len(bodies) == len(ROWS)
    assert all(body["reasoning_effort"] == "low" for body in bodies)
    assert all(body["messages"][0]["role"] == "developer" for body in bodies)
    assert {body["messages"][0]["content"] for body in bodies} == {
        f"Answer for row {n} only." for n in range(12)
    }


def test_each_item_has_its_own_client_request_id(o3_standin_connection):
    run(batch())
    ids = {request.header("X-Client-Request-Id") for request in o3_standin_connection.chat_requests}
    assert ids == {f"stub_dag:ask:manual__2026-01-01:t1:i{n}" for n in range(len(ROWS))}


def test_usage_is_pushed_summed_and_per_item(o3_standin_connection):
    _, xcoms = run(batch())
    per_item = xcoms["usage_per_item"]
    assert len(per_item) == len(ROWS)
    assert xcoms["usage"]["total_tokens"] == sum(usage["total_tokens"] for usage in per_item)
    assert xcoms["usage"]["items"] == len(ROWS)
    assert xcoms["usage"]["usd_spent"] == pytest.approx(sum(usage["usd_spent"] for usage in per_item))
    assert xcoms["batch"]["spend"]["requests"] == len(ROWS)
    assert xcoms["batch"]["spend"]["total_tokens"] == xcoms["usage"]["total_tokens"]


def test_with_continue_a_failed_item_is_none_and_listed_in_errors(o3_standin_connection):
    o3_standin_connection.script(HttpError(400, "this row is too long"))
    result, xcoms = run(batch(on_item_error="continue", limits={"max_concurrency": 1}))
    assert result[0] is None
    assert result[1:] == [expected_reply(index) for index in range(1, len(ROWS))]
    (error,) = xcoms["errors"]
    assert error["index"] == 0
    assert error["error"] == "BadRequestError"
    assert error["status"] == 400
    assert "this row is too long" in error["message"]
    assert xcoms["usage_per_item"][0] is None
    assert xcoms["batch"]["failed"] == 1


def test_a_reply_that_is_no_answer_is_an_item_failure_too(o3_standin_connection):
    o3_standin_connection.script(Reply("", finish_reason="length"))
    result, xcoms = run(batch(on_item_error="continue", limits={"max_concurrency": 1}))
    assert result[0] is None
    assert xcoms["errors"][0]["error"] == "CompletionError"
    assert "max_completion_tokens" in xcoms["errors"][0]["message"]
    assert xcoms["batch"]["spend"]["requests"] == len(ROWS), "the empty reply was paid for"


def test_with_fail_the_first_failed_item_stops_the_batch_and_fails_the_task(o3_standin_connection):
    o3_standin_connection.script(HttpError(400, "this row is too long"))
    with pytest.raises(
        AirflowFailException, match=r"item 0 of 12 failed: BadRequestError.*too long.*stopped"
    ):
        run(batch(limits={"max_concurrency": 1}))
    assert len(o3_standin_connection.chat_requests) == 1, "no item is sent after the failure"


def test_a_retryable_item_failure_is_left_for_airflow_to_retry(o3_standin_connection):
    o3_standin_connection.script(*(HttpError(503, "overloaded") for _ in range(FAST_RETRY["max_attempts"])))
    with pytest.raises(BatchItemError, match="cache='on'") as raised:
        run(batch(limits={"max_concurrency": 1}))
    assert raised.value.retryable
    assert isinstance(raised.value.__cause__ or raised.value.failure.error, ServerError)


def test_a_wrong_key_stops_the_batch_even_with_continue(o3_standin_connection):
    o3_standin_connection.script(HttpError(401, "Invalid API key"))
    with pytest.raises(AirflowFailException, match="an error every item would meet"):
        run(batch(on_item_error="continue", limits={"max_concurrency": 1}))
    assert len(o3_standin_connection.chat_requests) == 1


def test_a_template_error_fails_before_any_request(o3_standin_connection):
    with pytest.raises(AirflowFailException, match=r"item 0: .*UndefinedError.*\(fix: check the keys"):
        run(batch(prompt="Industry of {{ item.missing_column }}"))
    assert o3_standin_connection.chat_requests == []


def test_with_continue_an_item_that_does_not_render_is_recorded_and_the_others_sent(o3_standin_connection):
    items = [{"text": "a"}, {"other": "b"}, {"text": "c"}]
    result, xcoms = run(batch(items=items, prompt="Say {{ item.text }}", on_item_error="continue"))
    assert result[0].endswith("Say a") and result[2].endswith("Say c")
    assert result[1] is None
    assert xcoms["errors"][0]["index"] == 1
    assert xcoms["errors"][0]["error"] == "InvalidRequestError"
    assert len(o3_standin_connection.chat_requests) == 2


def test_an_empty_rendered_prompt_is_refused_before_sending(o3_standin_connection):
    with pytest.raises(AirflowFailException, match=r"item 1: the rendered prompt is empty"):
        run(batch(items=["a", "  "], prompt="{{ item }}"))
    assert o3_standin_connection.chat_requests == []


def test_budget_stop_ends_with_partial_results_and_reports_the_spend(o3_standin_connection, one_call):
    result, xcoms = run(
        batch(limits={"max_concurrency": 1}, budget={"max_total_tokens": 3 * one_call, "on_exceeded": "stop"})
    )
    assert result[:3] == [expected_reply(index) for index in range(3)]
    assert result[3:] == [None] * (len(ROWS) - 3)
    assert len(o3_standin_connection.chat_requests) == 3, "no request starts once the budget is reached"
    summary = xcoms["batch"]
    assert summary["not_sent"] == len(ROWS) - 3
    assert "max_total_tokens" in summary["budget_reached"]
    assert summary["spend"]["total_tokens"] == 3 * one_call
    assert {error["error"] for error in xcoms["errors"]} == {"BudgetExceededError"}


def test_budget_fail_fails_the_task_naming_the_spend(o3_standin_connection):
    with pytest.raises(
        AirflowFailException, match=r"budget was reached \(\$.* of max_cost_usd.*spent .* tokens"
    ):
        run(batch(limits={"max_concurrency": 1}, budget={"max_cost_usd": 0.002}))
    assert len(o3_standin_connection.chat_requests) == 2  # about $0.0012 each


def test_budget_stops_new_requests_while_others_are_in_flight(o3_standin_connection, one_call):
    result, _ = run(
        batch(limits={"max_concurrency": 4}, budget={"max_total_tokens": one_call, "on_exceeded": "stop"})
    )
    sent = len(o3_standin_connection.chat_requests)
    assert sent <= 4, "only the requests already in flight when the first reply crossed the budget"
    assert sum(value is not None for value in result) == sent


def test_a_retried_batch_with_the_cache_pays_only_for_the_items_that_did_not_complete(
    o3_standin_connection, tmp_path
):
    cache = {"mode": "on", "path": str(tmp_path)}
    overloaded = [HttpError(503, "overloaded")] * FAST_RETRY["max_attempts"]
    o3_standin_connection.script(Reply("r0"), Reply("r1"), Reply("r2"), *overloaded)
    with pytest.raises(BatchItemError, match=r"item 3 of 12 failed.*a retry of the task pays only"):
        run(batch(cache=cache, limits={"max_concurrency": 1}))

    o3_standin_connection.clear()
    result, xcoms = run(batch(cache=cache, limits={"max_concurrency": 1}))
    assert len(o3_standin_connection.chat_requests) == len(ROWS) - 3, "items 0-2 are not paid again"
    assert result[:3] == ["r0", "r1", "r2"]
    assert result[3:] == [expected_reply(index) for index in range(3, len(ROWS))]
    assert xcoms["batch"]["from_cache"] == 3
    assert xcoms["batch"]["spend"]["requests"] == len(ROWS) - 3


@pytest.mark.slow  # waits out the 429s' Retry-After
def test_the_batch_slows_down_as_a_whole_on_429(o3_standin_connection):
    o3_standin_connection.script(*(RateLimited(retry_after=0.2) for _ in range(4)))
    result, xcoms = run(batch(limits={"max_concurrency": 4}))
    assert result == [expected_reply(index) for index in range(len(ROWS))]
    assert xcoms["batch"]["rate_limited"] == 4
    requests = o3_standin_connection.chat_requests
    # after the 429s, every worker waited out the Retry-After: no request in the pause
    last_429 = requests[3].received_at
    assert all(r.received_at >= last_429 + 0.15 for r in requests[4:])


def test_requests_per_minute_caps_the_batch(o3_standin_connection):
    run(batch(items=ROWS[:5], limits={"max_concurrency": 5, "requests_per_minute": 600}))
    times = sorted(r.received_at for r in o3_standin_connection.chat_requests)
    assert times[-1] - times[0] >= 4 * 0.1 * 0.8


def test_n_choices_give_a_list_per_item(o3_standin_connection):
    result, _ = run(batch(items=ROWS[:2], parameters={"n": 2}))
    assert result == [[expected_reply(0)] * 2, [expected_reply(1)] * 2]


def test_structured_output_is_parsed_per_item(o3_standin_connection):
    schema = {"type": "object", "properties": {"industry": {"type": "string"}}}
    o3_standin_connection.script(*(Reply(json.dumps({"industry": f"Retail {n}"})) for n in range(3)))
    result, _ = run(batch(items=ROWS[:3], response_format=schema, limits={"max_concurrency": 1}))
    assert result == [{"industry": f"Retail {n}"} for n in range(3)]


def test_dry_run_builds_every_body_and_sends_nothing(o3_standin_connection):
    result, _ = run(batch(render_only=True))
    assert o3_standin_connection.chat_requests == []
    assert [body["messages"][-1]["content"] for body in result] == [
        prompt_of(index) for index in range(len(ROWS))
    ]


def test_an_empty_list_sends_nothing(o3_standin_connection):
    result, xcoms = run(batch(items=[]))
    assert result == []
    assert xcoms["batch"]["items"] == 0
    assert o3_standin_connection.chat_requests == []


@pytest.mark.parametrize("items", ["[1, 2]", {"a": 1}, 42])
def test_items_that_are_not_a_list_fail_with_the_fix(o3_standin_connection, items):
    with pytest.raises(AirflowFailException, match=r"not a list.*render_template_as_native_obj"):
        run(batch(items=items))


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"limits": {"max_concurrency": 0}}, "max_concurrency is 0"),
        ({"limits": {"concurrency": 4}}, "use the keys max_concurrency"),
        ({"limits": {"requests_per_minute": -1}}, "requests_per_minute is -1"),
        ({"budget": {"max_cost_usd": 0}}, "max_cost_usd is 0"),
        ({"budget": {"on_exceeded": "pause"}}, "on_exceeded is 'pause'"),
        ({"on_item_error": "skip"}, "on_item_error is 'skip'"),
    ],
)
def test_bad_settings_fail_at_dag_parse_with_the_fix(arguments, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        batch(**arguments)


@pytest.mark.parametrize("argument", ["stream", "json_retries", "deferrable"])
def test_stream_json_retries_and_deferrable_are_no_arguments_of_a_batch(argument):
    """Airflow's own check of unknown arguments refuses them, naming them, when the DAG is parsed."""
    with pytest.raises((TypeError, AirflowException), match=rf"(?s)Invalid arguments.*{argument}"):
        batch(**{argument: True})


A_MONTH_AHEAD = format_datetime(datetime.now(UTC) + timedelta(days=30), usegmt=True)
CAPPED_RETRY = {**FAST_RETRY, "max_retry_after": 0.2, "max_retry_seconds": 5}


def batch_workers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("o3-batch-")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "99999"},
        {"Retry-After": A_MONTH_AHEAD},
        {"retry-after-ms": "inf"},
        {"retry-after-ms": "nan"},
        {"x-ratelimit-reset-requests": "99999s"},
    ],
    ids=["retry-after-99999", "retry-after-a-month-ahead", "ms-inf", "ms-nan", "reset-99999s"],
)
def test_a_huge_or_endless_retry_after_is_capped_by_the_retry_policy(o3_standin_connection, headers):
    o3_standin_connection.script(*[HttpError(429, "slow down", headers=headers)] * 2)
    started = time.monotonic()
    result, xcoms = run(batch(items=ROWS[:2], request_retry=CAPPED_RETRY, limits={"max_concurrency": 2}))
    assert time.monotonic() - started < 8, "each wait is at most max_retry_after (0.2 s), not the hours asked"
    assert result == [expected_reply(index) for index in range(2)]
    assert xcoms["batch"]["rate_limited"] == 2


def kill_when_waiting(
    operator: O3MiniBatchOperator, server: StandInServer, kills: list[tuple[float, int]]
) -> None:
    """From another thread: once the workers wait out a 429, call ``on_kill()`` as Airflow does, and
    note when and how many requests had been sent."""

    def kill() -> None:
        deadline = time.monotonic() + 20
        while not server.chat_requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # every worker now waits out the pause, or the retry after its own 429
        kills.append((time.monotonic(), len(server.chat_requests)))
        operator.on_kill()

    threading.Thread(target=kill, daemon=True).start()


@pytest.mark.timeout(60)
def test_on_kill_stops_a_batch_paused_on_an_endless_retry_after_within_two_seconds(o3_standin_connection):
    endless = HttpError(429, "slow down", headers={"Retry-After": "99999"})
    o3_standin_connection.script(*[endless] * 20)
    operator = batch(request_retry={"max_attempts": 10, "max_retry_after": 3600, "max_retry_seconds": 86400})
    kills: list[tuple[float, int]] = []
    kill_when_waiting(operator, o3_standin_connection, kills)
    with pytest.raises(BatchStoppedError, match="the task was killed") as raised:
        run(operator)
    killed, sent = kills[0]
    assert time.monotonic() - killed < 2
    assert raised.value.retryable, "whether a killed task tries again is Airflow's decision"
    while batch_workers() and time.monotonic() < killed + 2:
        time.sleep(0.05)
    assert batch_workers() == [], "the waiting workers wake and leave"
    assert len(o3_standin_connection.chat_requests) == sent, "no request starts after the kill"


def test_after_a_budget_stop_the_last_progress_line_agrees_with_the_batch_xcom(
    o3_standin_connection, one_call, capsys
):
    # the second item waits for its turn (two starts a second) while the first reply crosses the budget
    _, xcoms = run(
        batch(
            limits={"max_concurrency": 2, "requests_per_minute": 120},
            budget={"max_total_tokens": one_call, "on_exceeded": "stop"},
        )
    )
    summary = xcoms["batch"]
    assert summary["succeeded"] == 1 and summary["not_sent"] == len(ROWS) - 1
    finished = re.search(
        r"Batch finished: (\d+)/(\d+) items done \((\d+) failed, (\d+) not sent", capsys.readouterr().out
    )
    assert finished is not None
    done, total, failed, not_sent = map(int, finished.groups())
    assert (done, total) == (summary["succeeded"] + summary["failed"], summary["items"])
    assert (failed, not_sent) == (summary["failed"], summary["not_sent"])


def test_cache_hits_in_a_batch_are_counted_in_the_progress_line_not_logged_one_by_one(
    o3_standin_connection, tmp_path, capsys, caplog
):
    cache = {"mode": "on", "path": str(tmp_path)}
    run(batch(cache=cache))
    capsys.readouterr()
    caplog.set_level(logging.INFO)
    _, xcoms = run(batch(cache=cache))
    assert xcoms["batch"]["from_cache"] == len(ROWS)
    cache_lines = [record for record in caplog.records if "response cache" in record.getMessage()]
    assert [record for record in cache_lines if record.levelno >= logging.INFO] == []
    out = capsys.readouterr().out
    assert "Reply read from the response cache" not in out
    assert f"Batch finished: {len(ROWS)}/{len(ROWS)} items done (0 failed, {len(ROWS)} from cache)" in out


def test_a_400_on_one_item_says_a_task_retry_would_not_help(o3_standin_connection, tmp_path):
    o3_standin_connection.script(HttpError(400, "this row is too long"))
    with pytest.raises(AirflowFailException, match=r"a retry of the task would not help") as raised:
        run(batch(limits={"max_concurrency": 1}, cache={"mode": "on", "path": str(tmp_path)}))
    assert "so that a retry pays only" not in str(raised.value)
    assert len(o3_standin_connection.chat_requests) == 1


def test_a_batch_prompt_ending_in_md_with_spaces_is_inline_text(o3_standin_connection):
    result, _ = run(batch(items=["a"], prompt="Classify {{ item }} as in README.md"))
    sent = o3_standin_connection.chat_requests[0].body["messages"][-1]["content"]
    assert sent == "Classify a as in README.md"
    assert result == ["Answer to: Classify a as in README.md"]

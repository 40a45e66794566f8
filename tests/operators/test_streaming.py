"""Streaming: the SSE reader and assembler, the hook's streaming path, and the operator's live log."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from airflow_o3.errors import BadRequestError, ConnectError, ServerError, StreamCutError
from airflow_o3.hooks import O3MiniHook
from airflow_o3.response import completion_from_body
from airflow_o3.streaming import LineLog, StreamAssembler, sse_data
from airflow_o3.testing import HttpError, RateLimited, Reply, StreamCut
from tests.contract import validate_request_body, validate_stream_chunk
from tests.dagrun import run_dag
from tests.helpers import FAST_RETRY
from tests.operators.helpers import dag_with

USER = [{"role": "user", "content": "Write three lines about tides."}]
LONG_REPLY = "".join(f"Line {n}: the tide turns twice a day, pulled by the moon.\n" for n in range(1, 7))
HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "o3-mini-2025-01-31"}


def chunk(
    delta: dict | None = None, finish_reason: str | None = None, index: int = 0, **extra: object
) -> str:
    choices = [] if delta is None else [{"index": index, "delta": delta, "finish_reason": finish_reason}]
    payload = {**HEAD, "choices": choices, **extra}
    validate_stream_chunk(payload)
    return json.dumps(payload)


def assembler(on_text=None) -> StreamAssembler:
    return StreamAssembler(200, {"x-request-id": "req-7"}, on_text)


@pytest.fixture
def hook(o3_standin_connection):
    return O3MiniHook(request_retry=FAST_RETRY)


# -- the pure parts --------------------------------------------------------------------------------


def test_sse_data_joins_multiline_events_skips_comments_and_drops_an_unfinished_event():
    lines = [
        b": keep-alive",
        b"event: message",
        b"data: first",
        b"data: second",
        b"",
        b"data:no-space",
        b"",
        b"id: 3",
        b'data: {"half": ',
    ]
    assert list(sse_data(lines)) == ["first\nsecond", "no-space"]
    assert list(sse_data(["data: [DONE]"])) == ["[DONE]"]


def test_assembler_rebuilds_the_body_a_plain_call_returns():
    usage = {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}
    pieces: list[tuple[int, str]] = []
    stream = assembler(lambda index, text: pieces.append((index, text)))
    for data in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hello, "}),
        chunk({"content": "world."}),
        chunk({}, "stop"),
        chunk(None, usage=usage, meta={"usage": {"usd_spent": 0.0001, "credits_used": 200}}),
        "[DONE]",
    ):
        stream.feed(data)
    completion = stream.completion()
    plain = completion_from_body(
        {
            **HEAD,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello, world."},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
            "meta": {"usage": {"usd_spent": 0.0001, "credits_used": 200}},
        },
        {"x-request-id": "req-7"},
    )
    assert pieces == [(0, "Hello, "), (0, "world.")]
    assert (completion.text, completion.finish_reason, completion.usage) == (plain.text, "stop", usage)
    assert (completion.cost_usd, completion.credits_used, completion.request_id) == (0.0001, 200, "req-7")
    assert (completion.id, completion.model, completion.created) == (plain.id, plain.model, plain.created)


def test_assembler_joins_tool_call_argument_fragments_by_index():
    stream = assembler()
    first = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    stream.feed(chunk({"role": "assistant", "content": "", "tool_calls": [first]}))
    for fragment in ('{"city"', ': "Oslo"', "}"):
        stream.feed(
            json.dumps(
                {
                    **HEAD,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]},
                            "finish_reason": None,
                        }
                    ],
                }
            )
        )
    stream.feed(chunk({}, "tool_calls"))
    stream.feed("[DONE]")
    (tool_call,) = stream.completion().tool_calls
    assert (tool_call.id, tool_call.name, tool_call.arguments) == (
        "call_1",
        "get_weather",
        '{"city": "Oslo"}',
    )


def test_a_stream_without_done_is_a_cut_naming_how_much_arrived():
    stream = assembler()
    stream.feed(chunk({"role": "assistant", "content": ""}))
    stream.feed(chunk({"content": "Partial answ"}))
    with pytest.raises(StreamCutError) as raised:
        stream.completion()
    assert not raised.value.retryable
    assert "broke off before data: [DONE] after 2 chunk(s) and 12 character(s) of reply" in str(raised.value)
    assert "request id req-7" in str(raised.value)


def test_a_stream_that_breaks_before_any_text_is_retryable():
    stream = assembler()
    stream.feed(chunk({"role": "assistant", "content": ""}))
    error = stream.interrupted("ChunkedEncodingError")
    assert isinstance(error, ConnectError)
    assert error.retryable


def test_an_error_event_is_the_services_error_before_text_and_a_cut_after():
    event = json.dumps({"error": {"message": "upstream overloaded", "type": "server_error", "code": 503}})
    with pytest.raises(ServerError, match="upstream overloaded"):
        assembler().feed(event)
    stream = assembler()
    stream.feed(chunk({"content": "Some text"}))
    with pytest.raises(StreamCutError, match=r"9 character\(s\) of reply \(ServerError"):
        stream.feed(event)


def test_line_log_writes_whole_lines_and_splits_a_line_too_long_to_wait_for():
    written: list[tuple[int, str]] = []
    log = LineLog(lambda index, line: written.append((index, line)), max_line=10)
    for piece in ("first li", "ne\nsec", "ond\n", "0123456789abc"):
        log.add(0, piece)
    log.add(1, "other choice")
    assert written == [(0, "first line"), (0, "second"), (0, "0123456789"), (1, "other choi")]
    log.close()
    assert written[-2:] == [(0, "abc"), (1, "ce")]


# -- the hook against the stand-in ------------------------------------------------------------------


def test_streamed_chat_calls_on_text_piece_by_piece_and_equals_the_plain_reply(hook, o3_standin_connection):
    o3_standin_connection.script(Reply(LONG_REPLY), Reply(LONG_REPLY))
    pieces: list[str] = []
    streamed = hook.chat(USER, stream=True, on_text=lambda index, text: pieces.append(text))
    plain = hook.chat(USER)
    streaming_request, _ = o3_standin_connection.chat_requests
    validate_request_body(streaming_request.body, strict=True)
    assert streaming_request.body["stream"] is True
    assert streaming_request.body["stream_options"] == {"include_usage": True}
    assert streaming_request.header("Accept") == "text/event-stream"
    assert len(pieces) > 6
    assert "".join(pieces) == LONG_REPLY == streamed.text == plain.text
    assert streamed.usage == plain.usage
    assert streamed.cost_usd == plain.cost_usd
    assert streamed.usage_record() == plain.usage_record()
    assert streamed.finish_reason == plain.finish_reason == "stop"


def test_streamed_chat_with_n_choices_keeps_them_apart(hook, o3_standin_connection):
    pieces: dict[int, str] = {}

    def collect(index: int, text: str) -> None:
        pieces[index] = pieces.get(index, "") + text

    completion = hook.chat(USER, stream=True, n=2, on_text=collect)
    assert [choice.index for choice in completion.choices] == [0, 1]
    assert pieces == {0: completion.choices[0].text, 1: completion.choices[1].text}


def test_a_stream_cut_mid_way_is_an_error_and_is_not_sent_again(hook, o3_standin_connection):
    o3_standin_connection.script(Reply(LONG_REPLY), StreamCut(after_chunks=3))
    pieces: list[str] = []
    hook.chat(USER)  # the first scripted reply
    with pytest.raises(StreamCutError) as raised:
        hook.chat(USER, stream=True, on_text=lambda index, text: pieces.append(text))
    assert len(o3_standin_connection.chat_requests) == 2
    assert len(pieces) == 3
    assert f"{len(''.join(pieces))} character(s) of reply" in str(raised.value)
    assert "the partial reply is not used" in str(raised.value)


def test_a_stream_cut_before_any_text_is_sent_again(hook, o3_standin_connection):
    o3_standin_connection.script(StreamCut(after_chunks=0), Reply("Tides rise.\nTides fall.\nTides turn."))
    completion = hook.chat(USER, stream=True)
    assert completion.text == "Tides rise.\nTides fall.\nTides turn."
    assert len(o3_standin_connection.chat_requests) == 2


def test_stream_requests_that_fail_with_a_status_are_typed_and_retried_like_plain_ones(
    hook, o3_standin_connection
):
    o3_standin_connection.script(RateLimited(retry_after=0.01), HttpError(503))
    assert hook.chat(USER, stream=True).text
    assert len(o3_standin_connection.chat_requests) == 3
    o3_standin_connection.script(HttpError(400, "stream_options needs stream", param="stream_options"))
    with pytest.raises(BadRequestError, match="stream_options needs stream"):
        hook.chat(USER, stream=True)


def test_a_streamed_reply_from_the_cache_is_replayed_to_on_text(hook, o3_standin_connection, tmp_path):
    from airflow_o3.cache import CacheSettings, ResponseCache

    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path)))
    first = hook.chat(USER, stream=True, cache=cache)
    replayed: list[str] = []
    again = hook.chat(USER, stream=True, cache=cache, on_text=lambda index, text: replayed.append(text))
    assert len(o3_standin_connection.chat_requests) == 1
    assert again.from_cache
    assert replayed == [first.text]
    assert again.usage_record() == first.usage_record()


# -- the operator, end to end -------------------------------------------------------------------------


@pytest.mark.usefixtures("airflow_db")
def test_streaming_end_to_end_logs_the_reply_line_by_line_and_pushes_the_same_xcom(
    dag_file, o3_standin_connection
):
    dag_id = dag_with(
        dag_file,
        "streaming_e2e",
        """
        plain = O3MiniOperator(task_id="plain", prompt="Write about tides.")
        streamed = O3MiniOperator(task_id="streamed", prompt="Write about tides.", stream=True)
        plain_json = O3MiniOperator(
            task_id="plain_json", prompt="Classify: {{ params.ticket }}", response_format=TICKET_SCHEMA
        )
        streamed_json = O3MiniOperator(
            task_id="streamed_json", prompt="Classify: {{ params.ticket }}", response_format=TICKET_SCHEMA,
            stream=True,
        )
        plain >> streamed >> plain_json >> streamed_json
        """,
    )
    o3_standin_connection.script(*[Reply(LONG_REPLY)] * 2)
    result = run_dag(dag_id)
    result.assert_success()
    for request in o3_standin_connection.chat_requests:
        validate_request_body(request.body, strict=True)
    assert [r.body.get("stream", False) for r in o3_standin_connection.chat_requests] == [
        False,
        True,
        False,
        True,
    ]
    assert result.xcom("streamed") == result.xcom("plain") == LONG_REPLY
    assert result.xcom("streamed", key="usage") == result.xcom("plain", key="usage")
    assert (
        result.xcom("streamed_json")
        == result.xcom("plain_json")
        == {"label": "billing", "confidence": 0.5, "reason": "example"}
    )
    log = result.task_log("streamed")
    # Airflow 3 (structlog) ends the line with "  [airflow.task...] loc=..."; Airflow 2 ends it there
    logged = re.findall(r"reply \| (.*?)(?:\s+\[airflow\.task[^\n]*)?$", log, re.MULTILINE)
    assert logged == LONG_REPLY.splitlines(), "one log record per line of the reply, in order"
    assert "reply | " not in result.task_log("plain")


@pytest.mark.usefixtures("airflow_db")
def test_a_stream_cut_end_to_end_fails_the_try_and_an_airflow_retry_asks_again(
    dag_file, o3_standin_connection
):
    dag_id = dag_with(
        dag_file,
        "streaming_e2e_cut",
        f"""
        import datetime
        O3MiniOperator(
            task_id="streamed", prompt="Write about tides.", stream=True, retries=1,
            retry_delay=datetime.timedelta(seconds={timedelta(0).total_seconds()}),
        )
        """,
    )
    o3_standin_connection.script(StreamCut(after_chunks=2), Reply("The moon pulls the sea."))
    result = run_dag(dag_id)
    result.assert_success()
    assert result.try_number("streamed") == 2
    log = result.task_log("streamed")
    assert "StreamCutError" in log
    assert "broke off before data: [DONE] after 3 chunk(s)" in log
    assert result.xcom("streamed") == "The moon pulls the sea."
    assert len(o3_standin_connection.chat_requests) == 2


@pytest.mark.usefixtures("airflow_db")
def test_a_stream_cut_end_to_end_without_retries_fails_and_pushes_no_partial_reply(
    dag_file, o3_standin_connection
):
    dag_id = dag_with(
        dag_file,
        "streaming_e2e_cut_fails",
        'O3MiniOperator(task_id="streamed", prompt="Tides?", stream=True)',
    )
    o3_standin_connection.script(StreamCut(after_chunks=1))
    result = run_dag(dag_id)
    assert result.task_state("streamed") == "failed"
    assert result.xcom("streamed", default=None) is None
    assert result.xcom("streamed", key="usage", default=None) is None
    assert "reply | Stand-in reply t" in result.task_log("streamed"), "what arrived is in the log"
    (request,) = o3_standin_connection.chat_requests
    validate_request_body(request.body, strict=True)

"""The hook's wire against purpose-built hostile servers on 127.0.0.1.

Each server here does one bad thing a proxy or a fake endpoint might do: trickle a reply, send only
keep-alive comments, send too much, redirect, echo a bearer token, speak plain HTTP behind an
``https://`` base URL. The tests assert what the hook did about it: the error raised, how soon,
how many requests reached which server, and that the API key never shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from airflow_o3 import errors
from airflow_o3.errors import InvalidRequestError, ServerError, ServiceError
from airflow_o3.hooks import O3MiniHook
from tests.helpers import USER, fast_retry, point_default_connection

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CANARY = "sk-canary-7f3a9c1e5b2d"
ONE_ATTEMPT = {"max_attempts": 1}
FIVE_FAST = fast_retry(5)


class Hostile:
    """A tiny HTTP server on 127.0.0.1 that answers every request with ``respond(handler)``.

    It records each request (method, path, body) and counts TCP connections, so a test can assert
    that a request did or did not reach it. ``stop`` is set when the server shuts down, for
    responders that trickle.
    """

    def __init__(self, respond: Callable[[Hostile, BaseHTTPRequestHandler], None]) -> None:
        self.respond = respond
        self.requests: list[tuple[str, str, bytes]] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        self.stop = threading.Event()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # TCP_NODELAY: each trickled byte leaves at once
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                hostile.connections += 1
                super().setup()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hostile.requests.append((self.command, self.path, body))
                hostile.headers.append(dict(self.headers))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    hostile.respond(hostile, self)
                self.close_connection = True

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def __enter__(self) -> Hostile:
        # polled every 50 ms, not 0.5 s: each shutdown would otherwise wait up to half a second
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def completion(text: str = "2, 3, 5") -> dict[str, Any]:
    return {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "created": 1,
        "model": "o3-mini-2025-01-31",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def drip(
    server: Hostile, handler: BaseHTTPRequestHandler, piece: bytes, every: float, seconds: float
) -> None:
    """Write ``piece`` every ``every`` seconds for ``seconds`` at most, or until the server stops."""
    for _ in range(round(seconds / every)):
        if server.stop.wait(every):
            return
        handler.wfile.write(piece)
        handler.wfile.flush()


def event_stream(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()


def trickle(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
    """Headers at once, then one byte of a 1000-byte body every 0.5 s; gives up after 8 s."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    drip(server, handler, b" ", every=0.5, seconds=8)


def trickled_headers(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
    """A status line, then one byte of an endless header every 0.5 s; gives up after 8 s."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    handler.wfile.flush()
    drip(server, handler, b"a", every=0.5, seconds=8)


def keep_alives(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
    """An event stream of ``: keep-alive`` comments every 0.2 s and nothing else; ends after 8 s."""
    event_stream(handler)
    drip(server, handler, b": keep-alive\n\n", every=0.2, seconds=8)


def endless_stream(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
    """An event stream of chunks with no text every 0.2 s, never reaching ``[DONE]``; ends after 8 s."""
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"role": "assistant"}}],
    }
    event_stream(handler)
    drip(server, handler, f"data: {json.dumps(chunk)}\n\n".encode(), every=0.2, seconds=8)


def huge(size: int) -> Callable[[Hostile, BaseHTTPRequestHandler], None]:
    """A 200 reply of ``size`` bytes: a valid completion padded with spaces."""

    def respond(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
        head = json.dumps(completion()).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(size))
        handler.end_headers()
        handler.wfile.write(head)
        padding = b" " * 65536
        left = size - len(head)
        while left > 0:
            handler.wfile.write(padding[:left])
            left -= len(padding)

    return respond


def redirect(status: int, location: str) -> Callable[[Hostile, BaseHTTPRequestHandler], None]:
    def respond(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return respond


def answer(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
    if handler.path.endswith("/models"):
        send_json(handler, 200, {"object": "list", "data": [{"id": "o3-mini"}]})
    else:
        send_json(handler, 200, completion("the redirect target answered"))


def connect(monkeypatch: pytest.MonkeyPatch, host: str, key: str = CANARY, **extras: Any) -> None:
    """Point ``aimlapi_default`` at ``host``."""
    point_default_connection(monkeypatch, host, key, **extras)


def asend(hook: O3MiniHook, **params: Any) -> Any:
    """The triggerer's path: :meth:`O3MiniHook.asend` over httpx in an event loop."""

    async def run() -> Any:
        prepared = hook.prepare(USER, **params)
        async with hook.async_client() as client:
            return await hook.asend(prepared, client)

    return asyncio.run(run())


SYNC_AND_ASYNC = pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda hook: hook.chat(USER), id="sync"),
        pytest.param(asend, id="async"),
    ],
)


@pytest.fixture
def secrets_shown(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """A check that no log record and no printed output holds the canary key or a bearer token."""
    caplog.set_level(logging.DEBUG)

    def check(*also: str) -> list[str]:
        captured = capsys.readouterr()
        texts = [record.getMessage() for record in caplog.records] + [captured.out, captured.err]
        return [text for text in texts for secret in (CANARY, "sk-live-", *also) if secret in text]

    yield check


# -- one attempt has a deadline ------------------------------------------------------------------


@pytest.mark.slow  # waits out the attempt timeout
@SYNC_AND_ASYNC
def test_a_reply_trickling_a_byte_every_half_second_is_cut_at_the_attempt_timeout(monkeypatch, call):
    with Hostile(trickle) as server:
        connect(monkeypatch, server.base_url, attempt_timeout=1, read_timeout=1, max_attempts=1)
        started = time.monotonic()
        with pytest.raises(errors.AttemptTimeoutError) as raised:
            call(O3MiniHook())
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"cut after {elapsed:.1f}s, not at the 1 s attempt timeout"
    assert "attempt_timeout=1s" in str(raised.value)
    assert "extra `attempt_timeout` of connection 'aimlapi_default'" in str(raised.value)
    assert raised.value.retryable


@SYNC_AND_ASYNC
def test_headers_trickling_a_byte_every_half_second_are_cut_at_the_attempt_timeout(monkeypatch, call):
    with Hostile(trickled_headers) as server:
        connect(monkeypatch, server.base_url, attempt_timeout=1, read_timeout=1, max_attempts=1)
        started = time.monotonic()
        with pytest.raises(errors.AttemptTimeoutError, match="attempt_timeout=1s"):
            call(O3MiniHook())
    assert time.monotonic() - started < 2.5


@pytest.mark.slow  # waits out two attempt timeouts
def test_an_attempt_timeout_is_retried_within_the_retry_policy(monkeypatch):
    with Hostile(trickle) as server:
        connect(monkeypatch, server.base_url, attempt_timeout=1, read_timeout=1)
        hook = O3MiniHook(request_retry={**FIVE_FAST, "max_retry_seconds": 1.5})
        started = time.monotonic()
        with pytest.raises(errors.AttemptTimeoutError, match=r"gave up after 2 attempt\(s\)"):
            hook.chat(USER)
    assert time.monotonic() - started < 3.5
    assert len(server.requests) == 2


def test_a_stream_of_only_keep_alive_comments_times_out_after_the_read_timeout(monkeypatch):
    with Hostile(keep_alives) as server:
        connect(monkeypatch, server.base_url, read_timeout=1, attempt_timeout=30, max_attempts=1)
        started = time.monotonic()
        with pytest.raises(errors.RequestTimeoutError, match="keep-alive") as raised:
            O3MiniHook().chat(USER, stream=True)
        elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"keep-alive comments held the call for {elapsed:.1f}s"
    assert not isinstance(raised.value, errors.StreamCutError)


@pytest.mark.slow  # waits out the attempt timeout
def test_a_stream_that_never_ends_is_cut_at_the_attempt_timeout(monkeypatch):
    with Hostile(endless_stream) as server:
        connect(monkeypatch, server.base_url, read_timeout=1, attempt_timeout=1, max_attempts=1)
        started = time.monotonic()
        with pytest.raises(errors.AttemptTimeoutError):
            O3MiniHook().chat(USER, stream=True)
    assert time.monotonic() - started < 2.0


# -- the size of a reply is capped -----------------------------------------------------------------


def test_a_25_mb_reply_is_refused_at_the_default_20_mb_limit_and_not_asked_again(monkeypatch):
    with Hostile(huge(25 * 1024 * 1024)) as server:
        connect(monkeypatch, server.base_url)
        with pytest.raises(errors.ReplyTooLargeError) as raised:
            O3MiniHook(request_retry=FIVE_FAST).chat(USER)
    assert len(server.requests) == 1
    assert not raised.value.retryable
    assert f"max_reply_bytes={20 * 1024 * 1024} bytes" in str(raised.value)
    assert "raise the extra `max_reply_bytes` of connection 'aimlapi_default'" in str(raised.value)


@SYNC_AND_ASYNC
def test_a_reply_over_a_configured_size_limit_is_refused(monkeypatch, call):
    with Hostile(huge(5000)) as server:
        connect(monkeypatch, server.base_url, max_reply_bytes=1000, max_attempts=3)
        with pytest.raises(errors.ReplyTooLargeError, match="max_reply_bytes=1000 bytes"):
            call(O3MiniHook())
        assert len(server.requests) == 1
        connect(monkeypatch, server.base_url, max_reply_bytes=5000)
        assert call(O3MiniHook()).text == "2, 3, 5"


def gzip_when_asked(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
    """A completion, gzipped whenever the request's Accept-Encoding allows gzip (as a CDN does)."""
    import gzip

    data = json.dumps(completion("2, 3, 5")).encode()
    zipped = "gzip" in handler.headers.get("Accept-Encoding", "")
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    if zipped:
        data = gzip.compress(data)
        handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@SYNC_AND_ASYNC
def test_a_server_that_gzips_when_allowed_gives_a_readable_paid_reply(monkeypatch, call):
    with Hostile(gzip_when_asked) as server:
        connect(monkeypatch, server.base_url, max_attempts=1)
        assert call(O3MiniHook()).text == "2, 3, 5"
    assert len(server.requests) == 1


def test_the_proxy_of_the_environment_carries_the_request_and_netrc_never_replaces_the_key(
    monkeypatch, tmp_path
):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    with Hostile(answer) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.origin)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        connect(monkeypatch, "http://service.invalid/v1")
        assert O3MiniHook().chat(USER).text == "the redirect target answered"
    [(method, target, _)] = proxy.requests
    assert (method, target) == ("POST", "http://service.invalid/v1/chat/completions")
    assert proxy.headers[0]["Authorization"] == f"Bearer {CANARY}"


# -- no redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307])
@SYNC_AND_ASYNC
def test_a_redirect_is_refused_naming_the_base_url_and_the_target_gets_nothing(monkeypatch, status, call):
    with Hostile(answer) as target:
        port = target.origin.rsplit(":", 1)[1]
        location = f"http://user:hunter2@127.0.0.1:{port}/v1/chat/completions?token=qs-secret"
        with Hostile(redirect(status, location)) as server:
            connect(monkeypatch, server.base_url)
            with pytest.raises(errors.RedirectError) as raised:
                call(O3MiniHook(request_retry=FIVE_FAST))
        assert target.requests == []
    assert len(server.requests) == 1
    message = str(raised.value)
    assert f"the base URL {server.base_url} answered {status}" in message
    assert f"redirecting to {target.origin}/v1/chat/completions;" in message
    assert "set the base URL (host) of connection 'aimlapi_default'" in message
    for secret in ("hunter2", "user:", "qs-secret", CANARY):
        assert secret not in message


def test_test_connection_does_not_follow_a_redirect(monkeypatch):
    with Hostile(answer) as target, Hostile(redirect(301, f"{target.base_url}/models")) as server:
        connect(monkeypatch, server.base_url)
        ok, message = O3MiniHook().test_connection()
    assert not ok
    assert target.requests == []
    assert f"the base URL {server.base_url} answered 301" in message


# -- secrets in odd shapes ---------------------------------------------------------------------------


def echo_bearer(server: Hostile, handler: BaseHTTPRequestHandler) -> None:
    message = (
        f"upstream refused Authorization: Bearer sk-live-xyz0123456789 (key {CANARY}; as JSON "
        f"{json.dumps(CANARY)}) " + "blah " * 1000
    )
    send_json(handler, 500, {"error": {"message": message, "type": "server_error"}})


@SYNC_AND_ASYNC
def test_a_bearer_token_and_the_key_in_a_5_kb_error_never_reach_the_error_or_the_log(
    monkeypatch, secrets_shown, call
):
    with Hostile(echo_bearer) as server:
        connect(monkeypatch, server.base_url)
        with pytest.raises(ServerError) as raised:
            call(O3MiniHook(request_retry={**FIVE_FAST, "max_attempts": 2}))
    assert len(server.requests) == 2
    text = str(raised.value)
    assert "upstream refused Authorization: Bearer ***" in text
    assert "sk-live-" not in text and CANARY not in text and CANARY not in repr(raised.value)
    assert len(raised.value.failure.message) <= 500
    assert "more characters not shown" in raised.value.failure.message
    assert secrets_shown() == []


def test_a_host_with_credentials_is_refused_without_printing_them(monkeypatch, secrets_shown):
    with Hostile(answer) as server:
        host = server.base_url.replace("http://", "http://admin:hunter2@")
        connect(monkeypatch, host)
        with pytest.raises(InvalidRequestError) as raised:
            O3MiniHook().chat(USER)
        ok, message = O3MiniHook().test_connection()
    assert server.requests == []
    assert not ok
    for text in (str(raised.value), message):
        assert "credentials in a URL" in text and "fix:" in text
        assert "hunter2" not in text and "admin" not in text
    assert secrets_shown("hunter2") == []


@pytest.mark.parametrize(("suffix", "what"), [("?api-version=1", "a query string"), ("#top", "a fragment")])
def test_a_host_with_a_query_string_or_a_fragment_is_refused_with_the_fix(monkeypatch, suffix, what):
    with Hostile(answer) as server:
        connect(monkeypatch, server.base_url + suffix)
        with pytest.raises(InvalidRequestError) as raised:
            O3MiniHook().chat(USER)
    assert server.requests == []
    assert (
        f"connection 'aimlapi_default': the connection's host {server.base_url} is followed by {what}"
        in str(raised.value)
    )
    assert f"fix: set the host to the base URL alone, e.g. {server.base_url})" in str(raised.value)
    assert "api-version" not in str(raised.value)


@pytest.mark.parametrize(
    "key", [f"{CANARY}\n", f" {CANARY}", f"{CANARY}\t", f"{CANARY}\r\n", f"sk-{CANARY}\x00"]
)
def test_a_key_pasted_with_a_line_break_or_a_space_is_refused_before_sending_and_never_shown(
    monkeypatch, key
):
    with Hostile(answer) as server:
        connect(monkeypatch, server.base_url, key=key)
        with pytest.raises(errors.ConfigurationError, match="paste the AI/ML API key alone") as raised:
            O3MiniHook().chat(USER)
    assert server.requests == []
    assert CANARY not in str(raised.value)


def test_a_key_shorter_than_the_masker_handles_is_warned_about_once_naming_the_connection(
    monkeypatch, caplog
):
    from airflow_o3.hooks import o3mini

    monkeypatch.setattr(o3mini, "_warned_short_keys", set())
    caplog.set_level(logging.WARNING)
    with Hostile(answer) as server:
        connect(monkeypatch, server.base_url, key="abc")
        O3MiniHook().chat(USER)
        O3MiniHook().chat(USER)
    warnings = [r.getMessage() for r in caplog.records if "shorter than 5 characters" in r.getMessage()]
    assert warnings == [
        "The API key of connection 'aimlapi_default' is shorter than 5 characters, too short for Airflow "
        "to mask it in logs; check that the password field holds the whole AI/ML API key"
    ]


def test_the_key_is_masked_also_in_its_json_escaped_and_repr_forms(monkeypatch):
    from airflow_o3.hooks import o3mini

    masked: list[str] = []
    monkeypatch.setattr(o3mini, "mask_secret", masked.append)
    key = 'sk-"odd\\key\u00e9'
    connect(monkeypatch, "http://127.0.0.1:9/v1", key=key)
    assert O3MiniHook().settings.api_key == key
    assert sorted(masked) == sorted({key, json.dumps(key)[1:-1], repr(key)[1:-1]})
    assert len(masked) == 3


# -- bad connection settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "value"),
    [
        ("read_timeout", "nan"),
        ("read_timeout", "inf"),
        ("connect_timeout", "-1"),
        ("attempt_timeout", "inf"),
        ("max_retry_after", "inf"),
        ("max_retry_seconds", "nan"),
        ("max_attempts", "nan"),
        ("max_reply_bytes", "lots"),
    ],
)
def test_an_extra_that_is_not_a_finite_number_is_refused_with_the_fix(monkeypatch, extra, value):
    with Hostile(answer) as server:
        connect(monkeypatch, server.base_url, **{extra: value})
        with pytest.raises(InvalidRequestError, match=rf"{extra}[ =]") as raised:
            O3MiniHook().chat(USER)
    assert server.requests == []
    assert repr(value) in str(raised.value) and "fix:" in str(raised.value)


# -- TLS against plain HTTP --------------------------------------------------------------------------


@SYNC_AND_ASYNC
def test_https_against_a_plain_http_server_is_not_retried_and_says_to_write_http(monkeypatch, call):
    with Hostile(answer) as server:
        connect(monkeypatch, server.base_url.replace("http://", "https://"))
        with pytest.raises(errors.TlsError) as raised:
            call(O3MiniHook(request_retry=FIVE_FAST))
    assert server.connections == 1
    assert not raised.value.retryable
    assert "the TLS handshake failed" in str(raised.value)
    assert "write http:// in the base URL of connection 'aimlapi_default'" in str(raised.value)


# -- test_connection ---------------------------------------------------------------------------------


def test_test_connection_reports_a_missing_connection_instead_of_raising(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AIMLAPI_NOWHERE", raising=False)
    ok, message = O3MiniHook(conn_id="aimlapi_nowhere").test_connection()
    assert not ok
    assert "connection 'aimlapi_nowhere' could not be read" in message
    assert "fix:" in message


def test_every_service_error_message_is_capped_whatever_built_it():
    failure = errors.HttpFailure(502, "Bearer abc.def " + "z" * 5000, request_id="r" * 1000)
    error = ServiceError(failure)
    assert "abc.def" not in str(error)
    assert len(failure.message) <= 500 and len(failure.request_id or "") <= 128
    assert errors.HttpFailure(502, failure.message) == failure.__class__(502, failure.message)
    assert ServiceError(errors.HttpFailure(502, failure.message)).failure.message == failure.message

"""A local stand-in for AI/ML API's OpenAI-compatible chat completions endpoint (docs/testing.md).

It refuses a body with the provider's own contract check (:func:`airflow_o3.request.body_problems`),
so the stand-in and the provider never disagree on what the service takes; each connection is served
on its own thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import random
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow_o3.contract import CREDITS_PER_USD, LIST_PRICE
from airflow_o3.request import body_problems
from airflow_o3.testing.billing import BALANCE_PATH, BillingState, answer_balance, billing_base_url
from airflow_o3.testing.faults import (
    Body,
    ConnectionReset,
    ErrorShape,
    HttpError,
    NonJson,
    RateLimited,
    Reply,
    ScriptItem,
    Stall,
    StreamCut,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
    from socketserver import _RequestType
    from types import TracebackType

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})

STANDIN_API_KEY = "standin-test-key"
"""The key the connections of :meth:`StandInServer.connection_json` carry unless told another."""

REASONING_TOKENS = {"low": 64, "medium": 192, "high": 512}
"""Hidden reasoning tokens the stand-in bills per choice, by ``reasoning_effort``."""

_MODEL = {
    "id": "o3-mini",
    "object": "model",
    "type": "chat-completion",
    "owned_by": "openai",
    "info": {"name": "o3 mini", "developer": "Open AI", "contextLength": 200000, "maxTokens": 100000},
    "endpoints": ["/v1/chat/completions"],
}
_BAD_KEY = "Incorrect API key provided. You can find your API key at https://aimlapi.com/app/keys."
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_STREAM_PIECE_CHARS = 16
_MAX_SCHEMA_DEPTH = 32
_RECURSION_DEPTH = 8
_STRING_FORMATS = {
    "date-time": "2025-01-31T00:00:00Z",
    "date": "2025-01-31",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_REFUSALS = {
    "unsupported_parameter": "Unsupported parameter: '{field}' is not supported with this model.",
    "unknown_parameter": "Unrecognized request argument supplied: {field}",
    "missing_required_parameter": "Missing required parameter: '{field}'.",
    "invalid_value": "Invalid value for '{field}': {text}",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the stand-in received it.

    ``headers`` keeps the names as sent (use :meth:`header` for a case-insensitive lookup);
    ``body`` is the parsed JSON or ``None`` when the body was empty or not JSON; ``raw`` the bytes.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    received_at: float

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the value of header ``name`` (any case), or ``default``."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), default)

    @property
    def is_chat(self) -> bool:
        """True for a POST to the chat completions endpoint."""
        return self.method == "POST" and urlsplit(self.path).path.rstrip("/") in CHAT_PATHS


def example_for_schema(schema: Mapping[str, Any]) -> Any:
    """Return a minimal instance that validates against the JSON schema ``schema``.

    Enums give their first value, strings ``"example"`` (or a sample for a known ``format``),
    integers 1, numbers 0.5, booleans ``True``, arrays one item and objects every property.
    Local ``$ref`` (``#/$defs/...``) is followed and ``anyOf``/``oneOf`` take the first non-null
    option. This is the stand-in's default reply to a ``json_schema`` response format.
    """
    return _example(schema, schema, 0)


def _example(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> Any:
    if depth > _MAX_SCHEMA_DEPTH:
        return None
    if "$ref" in schema:
        return _example(_resolve_ref(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    options = schema.get("anyOf", schema.get("oneOf"))
    if options is not None:
        non_null = [o for o in options if o.get("type") != "null"]
        if non_null and (depth < _RECURSION_DEPTH or len(non_null) == len(options)):
            return _example(non_null[0], root, depth + 1)
        return None
    if "allOf" in schema:
        parts = [_example(part, root, depth + 1) for part in schema["allOf"]]
        if all(isinstance(p, dict) for p in parts):
            return {k: v for part in parts for k, v in part.items()}
        return parts[0]
    kind = schema.get("type", "array" if "items" in schema else "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "string":
        text = _STRING_FORMATS.get(schema.get("format", ""), "example").ljust(schema.get("minLength", 0), "x")
        return text[: schema.get("maxLength", len(text))]
    if kind in ("integer", "number"):
        return _example_number(schema, 1 if kind == "integer" else 0.5)
    if kind == "boolean":
        return True
    if kind == "array":
        return _example_array(schema, root, depth)
    if kind == "object":
        return {name: _example(sub, root, depth + 1) for name, sub in schema.get("properties", {}).items()}
    return None


def _resolve_ref(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node  # type: ignore[no-any-return]


def _example_number(schema: Mapping[str, Any], value: float) -> float:
    step = 1 if isinstance(value, int) else 0.5
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        value = schema["exclusiveMinimum"] + step
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        value = schema["exclusiveMaximum"] - step
    return value


def _example_array(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int) -> list[Any]:
    prefix = [_example(sub, root, depth + 1) for sub in schema.get("prefixItems", [])]
    if prefix:
        return prefix
    wanted = max(schema.get("minItems", 0), 0 if depth >= _RECURSION_DEPTH else 1)
    wanted = min(wanted, schema.get("maxItems", wanted))
    return [_example(schema.get("items", {}), root, depth + 1) for _ in range(wanted)]


def default_reply(body: Mapping[str, Any]) -> str:
    """The stand-in's reply text to a request ``body`` when no ``reply`` callable is given.

    ``"Stand-in reply to: "`` plus the first 200 characters of the last user message; for a
    ``json_schema`` response format a minimal valid instance (see :func:`example_for_schema`), for
    ``json_object`` ``{"reply": "Stand-in reply to: ..."}``, both as JSON text.
    """
    user = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    text = "Stand-in reply to: " + (_text_of(user[-1].get("content")) if user else "")[:200]
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(example_for_schema(schema))
    if response_format.get("type") == "json_object":
        return json.dumps({"reply": text})
    return text


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _tokens(text: str | None) -> int:
    return math.ceil(len(text or "") / 4)


def _usage(prompt: int, reasoning: int, visible: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": reasoning + visible,
        "total_tokens": prompt + reasoning + visible,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def price(usage: Mapping[str, Any]) -> dict[str, float | int]:
    """AI/ML API's ``meta.usage`` for a usage object: ``{"credits_used", "usd_spent"}``, at the list
    price (:data:`airflow_o3.contract.LIST_PRICE`)."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    usd = LIST_PRICE.usd(usage.get("prompt_tokens", 0), cached, usage.get("completion_tokens", 0))
    return {"credits_used": round(usd * CREDITS_PER_USD), "usd_spent": round(usd, 9)}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _error_body(error: HttpError, path: str, request_id: str) -> tuple[bytes, str]:
    status, shape = error.status, error.shape
    message = error.message or HTTPStatus(status).phrase
    if shape == "text":
        return message.encode(), "text/plain; charset=utf-8"
    traced = {"message": message, "requestId": request_id, "timestamp": _now_iso()}
    if shape == "aimlapi":
        return _dumps({**traced, "path": path, "statusCode": status}), "application/json"
    if shape == "problem":
        phrase = HTTPStatus(status).phrase
        error_name = {"name": phrase.replace(" ", "") + "Exception", "message": message}
        problem = {"title": phrase, "status": status, "instance": path, **traced, "error": error_name}
        return _dumps(problem), "application/problem+json"
    kind = "server_error" if status >= 500 else "requests" if status == 429 else "invalid_request_error"
    payload = {"error": {"message": message, "type": kind, "param": error.param, "code": error.code}}
    return _dumps(payload), "application/json"


def _validate(body: Any) -> HttpError | None:
    """Return the 400 o3-mini would answer to ``body``, or ``None`` when it is acceptable: the
    provider's own check of what it sends (:func:`airflow_o3.request.body_problems`) decides."""
    if not isinstance(body, dict):
        return HttpError(400, "We could not parse the JSON body of your request.", code="invalid_json")
    problems = body_problems(body)
    if not problems:
        return None
    first = problems[0]
    message = _REFUSALS[first.code].format(field=first.field, text=first.text)
    return HttpError(400, message, param=first.field, code=first.code)


class _Handler(BaseHTTPRequestHandler):
    """HTTP I/O for one connection; :class:`StandInServer` decides what to answer."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean: no per-request line on stderr."""

    def do_GET(self) -> None:
        self.server.standin._handle(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _head(self, status: int, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def respond(self, status: int, body: bytes, headers: Mapping[str, str], complete: bool = True) -> None:
        """Send a response; unless ``complete``, announce the whole body but send only half of it,
        then close."""
        self._head(status, {**headers, "Content-Length": str(len(body))})
        self.wfile.write(body if complete else body[: len(body) // 2])
        self.close_connection = self.close_connection or not complete

    def respond_json(self, status: int, payload: Any, headers: Mapping[str, str]) -> None:
        self.respond(status, _dumps(payload), {"Content-Type": "application/json", **headers})

    def respond_error(self, error: HttpError, path: str, headers: Mapping[str, str]) -> None:
        """Send ``error`` in the body shape it asks for; ``headers`` carry the ``x-request-id``."""
        payload, content_type = _error_body(error, path, headers["x-request-id"])
        self.respond(error.status, payload, {"Content-Type": content_type, **headers, **error.headers})

    def stream(self, headers: Mapping[str, str], events: Iterable[bytes], complete: bool) -> None:
        """Send ``events`` as SSE in chunked encoding; close mid-body unless ``complete``."""
        sse = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        self._head(200, {**headers, **sse, "Transfer-Encoding": "chunked"})
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        if complete:
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.close_connection = True

    def reset(self) -> None:
        """Abort the connection with a TCP reset and no response."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the file's reference so close() really closes the socket now
        self.connection.close()
        self.close_connection = True

    def pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; return False (and mark the connection for closing) if the server stopped."""
        if self.server.stopping.wait(max(seconds, 0)):
            self.close_connection = True
            return False
        return True


class _HTTPServer(socketserver.ThreadingTCPServer):
    """Threaded listener for many concurrent keep-alive clients. Not ``http.server.HTTPServer``:
    its ``server_bind`` resolves the host name, slow or hanging without DNS."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], standin: StandInServer) -> None:
        self.standin = standin
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def close_request(self, request: _RequestType) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().close_request(request)

    def handle_error(self, request: _RequestType, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Shut every open client connection so idle keep-alive threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class StandInServer:
    """A local, scriptable stand-in for ``POST {base}/chat/completions`` on AI/ML API.

    Use it as a context manager or with :meth:`start`/:meth:`stop`. Options:

    - ``latency``: seconds to "think" before each chat answer other than the immediate 401, 400
      and rate-limit 429 (requests are answered concurrently, one thread each).
    - ``api_key``: when set, chat requests without ``Authorization: Bearer <api_key>`` get 401.
    - ``max_requests_per_second``: a token bucket (bursts of one second's worth); over it the
      server answers 429 with ``Retry-After``, ``retry-after-ms`` and ``x-ratelimit-*`` headers.
    - ``reply``: computes the reply text from the request body (default: :func:`default_reply`).
    - ``model``: the snapshot name reported in responses.

    Requests that send a parameter o3-mini rejects (``temperature``, ``max_tokens``, ...) get the
    same 400 ``unsupported_parameter`` the real model gives; other bodies outside the contract a 400
    naming the first field at fault. ``max_completion_tokens`` is honoured:
    when reasoning plus reply exceed it, the reply is cut and ``finish_reason`` is ``"length"``.

    :ivar billing: what its billing endpoint answers (:mod:`airflow_o3.testing.billing`).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        api_key: str | None = None,
        max_requests_per_second: float | None = None,
        reply: Callable[[dict[str, Any]], str] | None = None,
        model: str = "o3-mini-2025-01-31",
    ) -> None:
        if (max_requests_per_second or 0) < 0:
            raise ValueError("max_requests_per_second must be positive")
        self.host = "127.0.0.1"
        self.latency = latency
        self.api_key = api_key
        self.model = model
        self.billing = BillingState()
        self._requested_port = port
        self._reply = reply or default_reply
        self._rate = max_requests_per_second or 0.0
        self._tokens = max(1.0, self._rate)
        self._refilled_at = time.monotonic()
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._requests: list[RecordedRequest] = []
        self._script: deque[ScriptItem] = deque()
        self._stats: Counter[str] = Counter()
        self._delivered: Counter[str] = Counter()
        self._fault_rate = 0.0
        self._fault_statuses: tuple[int, ...] = ()
        self._rng = random.Random()
        self._httpd: _HTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> StandInServer:
        """Bind (port 0 picks a free port) and serve on a background thread; return ``self``."""
        if self._httpd is not None:
            raise RuntimeError("StandInServer is already running")
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="o3-standin", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled answers and close open connections. Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.stopping.set()
            httpd.shutdown()  # returns once serve_forever has
            httpd.drop_connections()
            httpd.server_close()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port being served (raises ``RuntimeError`` before :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("StandInServer is not running; call start() or use it as a context manager")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The API base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def connection_json(self, api_key: str = STANDIN_API_KEY) -> str:
        """The JSON value for ``AIRFLOW_CONN_AIMLAPI_DEFAULT`` pointing at this server (its billing
        endpoint too, so that ``test_connection`` reads the balance here, not from the service)."""
        extra = {"billing_base_url": billing_base_url(self)}
        connection = {"conn_type": "aimlapi", "host": self.base_url, "password": api_key, "extra": extra}
        return json.dumps(connection)

    def connection_uri(self, api_key: str = STANDIN_API_KEY) -> str:
        """The same connection in Airflow's URI form, ``aimlapi://:KEY@<url-encoded base URL>``.

        Airflow decodes the host back to the full ``http://...`` base URL, which the hook uses as is.
        """
        billing = quote(billing_base_url(self), safe="")
        key, base = quote(api_key, safe=""), quote(self.base_url, safe="")
        return f"aimlapi://:{key}@{base}?billing_base_url={billing}"

    # -- what the server has seen ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, any path, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Only the POSTs to the chat completions endpoint, oldest first."""
        return [r for r in self.requests if r.is_chat]

    @property
    def stats(self) -> dict[str, int]:
        """Counts over chat requests: ``received``, ``delivered`` (2xx completions fully sent),
        ``faults_injected`` (random faults), ``scripted`` (scripted items used) and
        ``rate_limited`` (429s from ``max_requests_per_second``)."""
        keys = ("received", "faults_injected", "scripted", "rate_limited")
        with self._lock:
            return {"delivered": sum(self._delivered.values()), **{key: self._stats[key] for key in keys}}

    @property
    def delivered_by_key(self) -> dict[str, int]:
        """Completions delivered per request: keyed by the client's ``X-Client-Request-Id``, or
        ``"sha256:<hex>"`` of the raw body without one. A value above 1 is a duplicate delivery."""
        with self._lock:
            return dict(self._delivered)

    def clear(self) -> None:
        """Forget recorded requests, stats and deliveries (the script and options stay)."""
        with self._lock:
            self._requests.clear()
            self._stats.clear()
            self._delivered.clear()

    # -- what the server will do -----------------------------------------------------------------

    def script(self, *items: ScriptItem) -> None:
        """Queue answers for the next chat requests, one each, in order (see ``faults``).

        Scripted items take precedence over validation, the rate limit and random faults; only
        the ``api_key`` check comes first. Normal replies resume when the queue is empty.
        """
        with self._lock:
            self._script.extend(items)

    @property
    def script_pending(self) -> int:
        """How many scripted items have not been used yet."""
        with self._lock:
            return len(self._script)

    def inject_faults(
        self, rate: float = 0.1, statuses: Sequence[int] = (429, 500, 502, 503, 504), seed: int | None = 1
    ) -> None:
        """Fail each chat request independently with probability ``rate`` (0 turns it off).

        The status is drawn from ``statuses`` and the error body shape at random; 429s carry
        ``Retry-After: 0``. ``seed`` makes the sequence of draws reproducible.
        """
        with self._lock:
            self._fault_rate = rate
            self._fault_statuses = tuple(statuses)
            self._rng = random.Random(seed)

    # -- request handling (called on the connection's thread) ------------------------------------

    def _handle(self, handler: _Handler, raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = dict(handler.headers.items())
        record = RecordedRequest(handler.command, handler.path, headers, body, raw, time.time())
        with self._lock:
            self._requests.append(record)
        path = urlsplit(handler.path).path.rstrip("/")
        if record.is_chat:
            self._chat(handler, record)
        elif handler.command == "GET" and path in MODELS_PATHS:
            handler.respond_json(200, {"object": "list", "data": [_MODEL]}, {})
        elif path == BALANCE_PATH:
            handler.respond_json(*answer_balance(self, record), {})
        else:
            error = HttpError(404, f"Cannot {handler.command} {path or '/'}", shape="aimlapi")
            handler.respond_error(error, path, {"x-request-id": uuid.uuid4().hex})

    def _chat(self, handler: _Handler, record: RecordedRequest) -> None:
        with self._lock:
            self._stats["received"] += 1
            seq = next(self._sequence)
        headers = {"x-request-id": f"req-standin-{seq}"}
        client_id = record.header("X-Client-Request-Id")
        if client_id and _CLIENT_REQUEST_ID.fullmatch(client_id):
            headers["X-Client-Request-Id"] = client_id
        path = urlsplit(record.path).path
        if self.api_key is not None and record.header("Authorization") != f"Bearer {self.api_key}":
            handler.respond_error(HttpError(401, _BAD_KEY, code="invalid_api_key"), path, headers)
            return
        with self._lock:
            item = self._script.popleft() if self._script else None
            self._stats["scripted"] += item is not None
        if item is None:
            refusal = _validate(record.body) or self._admit(headers)
            if refusal is not None:
                handler.respond_error(refusal, path, headers)
                return
            item = self._random_fault()
        if not handler.pause(self.latency):
            return
        match item:
            case Stall(seconds=seconds):
                if handler.pause(seconds):
                    self._complete(handler, record, seq, headers, None)
            case HttpError():
                handler.respond_error(item, path, headers)
            case ConnectionReset():
                handler.reset()
            case NonJson():
                handler.respond(
                    item.status, item.body.encode(), {"Content-Type": item.content_type, **headers}
                )
            case Body():
                handler.respond_json(item.status, item.json, {**headers, **item.headers})
            case _:
                self._complete(handler, record, seq, headers, item)

    def _admit(self, headers: dict[str, str]) -> HttpError | None:
        """Take a token from the ``max_requests_per_second`` bucket (bursts of one second's worth),
        add the ``x-ratelimit-*`` headers; return the 429 to send when there is none."""
        if not self._rate:
            return None
        capacity = max(1.0, self._rate)
        with self._lock:
            now = time.monotonic()
            tokens = min(capacity, self._tokens + (now - self._refilled_at) * self._rate)
            self._refilled_at = now
            admitted = tokens >= 1
            self._tokens = tokens = tokens - 1 if admitted else tokens
            self._stats["rate_limited"] += not admitted
        headers["x-ratelimit-limit-requests"] = str(math.ceil(capacity))
        headers["x-ratelimit-remaining-requests"] = str(math.floor(tokens))
        headers["x-ratelimit-reset-requests"] = f"{math.ceil((capacity - tokens) / self._rate * 1000)}ms"
        if admitted:
            return None
        return RateLimited(math.ceil((1 - tokens) / self._rate * 1000) / 1000, retry_after_ms=True)

    def _random_fault(self) -> ScriptItem | None:
        with self._lock:
            if not self._fault_rate or self._rng.random() >= self._fault_rate:
                return None
            self._stats["faults_injected"] += 1
            status = self._rng.choice(self._fault_statuses)
            shape: ErrorShape = self._rng.choice(("openai", "aimlapi", "problem"))
        return RateLimited(retry_after=0) if status == 429 else HttpError(status, shape=shape)

    def _plan(self, body: dict[str, Any], scripted: Reply | None) -> tuple[Reply, dict[str, Any]]:
        """Decide the reply and its usage (summed over the ``n`` choices)."""
        n = _choice_count(body)
        reasoning = REASONING_TOKENS.get(body.get("reasoning_effort", "medium"), REASONING_TOKENS["medium"])
        messages = body.get("messages") or []
        prompt = _tokens("".join(_text_of(m.get("content")) for m in messages if isinstance(m, dict)))
        if scripted is not None:
            arguments = "".join(c.get("function", {}).get("arguments", "") for c in scripted.tool_calls or [])
            visible = _tokens(scripted.content) + _tokens(scripted.refusal) + _tokens(arguments)
            return scripted, scripted.usage or _usage(prompt, reasoning * n, visible * n)
        text = self._reply(body)
        visible = _tokens(text)
        budget = body.get("max_completion_tokens")
        reply = Reply(text)
        if type(budget) is int and budget >= 1 and reasoning + visible > budget:
            reasoning = min(reasoning, budget)
            visible = budget - reasoning
            reply = Reply(text[: visible * 4], finish_reason="length")
        return reply, _usage(prompt, reasoning * n, visible * n)

    def _complete(
        self,
        handler: _Handler,
        record: RecordedRequest,
        seq: int,
        headers: dict[str, str],
        item: Reply | StreamCut | None,
    ) -> None:
        body = record.body if isinstance(record.body, dict) else {}
        try:
            reply, usage = self._plan(body, item if isinstance(item, Reply) else None)
        except Exception as exc:  # the user's reply callable failed: answer 500, then report it
            error = HttpError(500, f"Stand-in reply callable failed: {exc!r}")
            handler.respond_error(error, urlsplit(record.path).path, headers)
            raise
        completion = _completion(seq, self.model, reply, _choice_count(body), usage)
        cut = item.after_chunks if isinstance(item, StreamCut) else None
        # Count a delivery before its last byte goes out, so a client that has read the whole answer
        # always finds it counted; take it back if sending fails.
        key = record.header("X-Client-Request-Id") or "sha256:" + hashlib.sha256(record.raw).hexdigest()
        delivering = cut is None
        if delivering:
            self._count_delivery(key, 1)
        try:
            if body.get("stream") is True:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                handler.stream(headers, _stream_events(completion, include_usage, cut), complete=delivering)
            else:
                cost = completion["meta"]["usage"]
                cost_headers = {
                    "x-aimlapi-usd-spent": f"{cost['usd_spent']:.9f}".rstrip("0").rstrip("."),
                    "x-aimlapi-credits-used": str(cost["credits_used"]),
                    "Content-Type": "application/json",
                }
                handler.respond(200, _dumps(completion), {**cost_headers, **headers}, complete=delivering)
        except OSError:
            if delivering:
                self._count_delivery(key, -1)
            raise

    def _count_delivery(self, key: str, change: int) -> None:
        with self._lock:
            self._delivered[key] += change
            if not self._delivered[key]:
                del self._delivered[key]


def _choice_count(body: Mapping[str, Any]) -> int:
    n = body.get("n", 1)
    return n if type(n) is int and n >= 1 else 1


def _completion(seq: int, model: str, reply: Reply, n: int, usage: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content,
        "refusal": reply.refusal,
        "annotations": [],
    }
    if reply.tool_calls is not None:
        message["tool_calls"] = reply.tool_calls
    choice = {"message": message, "finish_reason": reply.finish_reason, "logprobs": None}
    return {
        "id": f"chatcmpl-standin-{seq}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_standin",
        "choices": [{"index": index, **choice} for index in range(n)],
        "usage": usage,
        "meta": {"usage": price(usage)},
    }


def _pieces(text: str | None) -> list[str]:
    """Split ``text`` into small stream deltas that never straddle a newline."""
    return [
        line[i : i + _STREAM_PIECE_CHARS]
        for line in (text or "").splitlines(keepends=True)
        for i in range(0, len(line), _STREAM_PIECE_CHARS)
    ]


def _stream_events(completion: dict[str, Any], include_usage: bool, cut_after: int | None) -> Iterator[bytes]:
    """Yield ``completion`` as SSE events, stopping after ``cut_after`` content chunks."""
    head = {key: completion[key] for key in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    if include_usage:
        head["usage"] = None

    def event(choices: list[dict[str, Any]], **fields: Any) -> bytes:
        return b"data: " + _dumps({**head, "choices": choices, **fields}) + b"\n\n"

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return event([{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

    sent = 0
    for choice in completion["choices"]:
        index, message = choice["index"], choice["message"]
        yield chunk(index, {"role": "assistant", "content": "", "refusal": None})
        deltas: list[dict[str, Any]] = [{"content": piece} for piece in _pieces(message["content"])]
        deltas += [{"refusal": piece} for piece in _pieces(message["refusal"])]
        # One complete delta per tool call: the contract's chunk schema requires id, type, name and
        # arguments in every tool-call delta, and clients that concatenate fragments read it whole.
        deltas += [
            {"tool_calls": [{"index": i, **call}]} for i, call in enumerate(message.get("tool_calls", []))
        ]
        for delta in deltas:
            if sent == cut_after:
                return
            sent += 1
            yield chunk(index, delta)
        if cut_after is not None:
            return
        yield chunk(index, {}, choice["finish_reason"])
    if include_usage:
        yield event([], usage=completion["usage"], meta=completion["meta"])
    yield b"data: [DONE]\n\n"

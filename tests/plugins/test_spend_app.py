"""The spend page's HTTP API on a real socket: who may see what, the CSV, bad input.

The app is the one Airflow mounts, served by uvicorn on 127.0.0.1. Airflow's SimpleAuthManager gives
roles, not per-DAG rights, so it cannot restrict a user to some DAGs: the auth manager here is a stub
that answers ``get_user_from_token`` and ``get_authorized_dag_ids`` (the two calls the page makes) and
records them. The user comes from the bearer token through Airflow's own ``get_user`` dependency.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from tests.plugins.recorded import call, record, requires_airflow_3, usage

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.usefixtures("airflow_db"), requires_airflow_3]

TOKENS = {"token-of-ana": "ana", "token-of-bo": "bo"}


@dataclass(frozen=True)
class StubUser:
    name: str

    def get_id(self) -> str:
        return self.name

    def get_name(self) -> str:
        return self.name


@dataclass
class StubAuthManager:
    """Ana may read ``readable``; Bo may read nothing."""

    readable: set[str]
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def get_user_from_token(self, token: str) -> StubUser:
        from jwt import InvalidTokenError

        if token not in TOKENS:
            raise InvalidTokenError("unknown token")
        return StubUser(TOKENS[token])

    def get_authorized_dag_ids(self, *, user: StubUser, method: str, session: Any = None) -> set[str]:
        self.asked.append((user.name, method))
        return set(self.readable) if user.name == "ana" else set()


@dataclass(frozen=True)
class Page:
    url: str
    auth: StubAuthManager
    readable: str
    hidden: str

    def get(self, path: str, token: str | None = "token-of-ana") -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(f"{self.url}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def page(monkeypatch) -> Iterator[Page]:
    import uvicorn
    from airflow.api_fastapi.app import _AuthManagerState

    from airflow_o3.plugins.spend_app import create_app

    readable, hidden = f"spend_app_mine_{uuid.uuid4().hex[:8]}", f"spend_app_theirs_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    record(
        call(dag_id=readable, run_id="r1", task_id="ask", when=now, usage_value=usage(30, 70, 40, usd=0.0625))
        + call(dag_id=hidden, run_id="r1", task_id="ask", when=now, usage_value=usage(900, 900, 0, usd=7.5))
    )
    auth = StubAuthManager({readable})
    monkeypatch.setattr(_AuthManagerState, "instance", auth)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Page(f"http://127.0.0.1:{port}", auth, readable, hidden)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_summary_holds_only_the_dags_the_auth_manager_lets_the_user_read(page):
    status, _, body = page.get("/api/summary?days=7")
    assert status == 200
    summary = json.loads(body)
    assert [row["dag_id"] for row in summary["per_dag"]] == [page.readable]
    assert summary["totals"]["usd_spent"] == 0.0625
    assert page.hidden.encode() not in body
    assert page.auth.asked == [("ana", "GET")]


def test_a_user_who_may_read_no_dag_gets_an_empty_page(page):
    status, _, body = page.get("/api/summary?days=30", token="token-of-bo")
    assert status == 200
    summary = json.loads(body)
    assert summary["per_dag"] == [] and summary["totals"]["calls"] == 0 and len(summary["per_day"]) == 30


@pytest.mark.parametrize("path", ["/api/summary", "/api/spend.csv"])
@pytest.mark.parametrize(("token", "status"), [(None, 401), ("forged", 403)])
def test_a_request_without_a_valid_login_is_refused_before_anything_is_read(page, path, token, status):
    code, _, body = page.get(path, token=token)
    assert code == status
    assert page.readable.encode() not in body
    assert page.auth.asked == []


def test_the_csv_download_lists_the_readable_calls_one_line_each(page):
    status, headers, body = page.get("/api/spend.csv?days=1")
    assert status == 200
    assert headers["content-type"].startswith("text/csv")
    assert headers["content-disposition"].startswith('attachment; filename="o3-spend-1d-')
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(row["dag_id"], row["task_id"], row["total_tokens"], row["usd_spent"]) for row in rows] == [
        (page.readable, "ask", "100", "0.0625")
    ]


@pytest.mark.parametrize("days", ["0", "367", "seven"])
def test_a_window_outside_1_to_366_days_is_refused_naming_the_days_parameter(page, days):
    status, _, body = page.get(f"/api/summary?days={days}")
    assert status == 422
    (error,) = json.loads(body)["detail"]
    assert error["loc"] == ["query", "days"]
    assert page.auth.asked == []


def test_the_page_loads_nothing_from_another_site(page):
    status, headers, body = page.get("/", token=None)
    assert status == 200 and headers["content-type"].startswith("text/html")
    html = body.decode()
    assert "api/summary?days=" in html and "api/spend.csv?days=" in html
    assert "<script src" not in html and "<link" not in html and "@import" not in html
    assert [part for part in html.split('"') if part.startswith(("http://", "https://", "//"))] == [
        "http://www.w3.org/2000/svg"  # the SVG namespace name, not a download
    ]

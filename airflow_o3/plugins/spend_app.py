"""The spend page's FastAPI app, served by Airflow 3's API server under ``/o3-spend``.

* ``GET /o3-spend/``: the page (one HTML file, its charts drawn in inline SVG; nothing from the internet).
* ``GET /o3-spend/api/summary?days=7``: what the page draws, as JSON.
* ``GET /o3-spend/api/spend.csv?days=7``: every recorded call of the window, one CSV line each.

The API routes authenticate as Airflow's own do (the UI's cookie or a bearer token) and read only the
DAGs the auth manager lets the user read. Imported by the API server only, never at DAG parse time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from airflow.api_fastapi.app import get_auth_manager

# FastAPI reads the route annotations at runtime: these two cannot move under TYPE_CHECKING.
from airflow.api_fastapi.common.db.common import SessionDep  # noqa: TC002
from airflow.api_fastapi.core_api.security import GetUserDep  # noqa: TC002
from fastapi import FastAPI, Query
from fastapi.responses import FileResponse, StreamingResponse

from airflow_o3.plugins.spend_query import MAX_DAYS, SpendQuery, Window, csv_lines

if TYPE_CHECKING:
    from collections.abc import Iterator

DaysQuery = Annotated[
    int, Query(ge=1, le=MAX_DAYS, description="How many UTC days to show, today included (1 to 366).")
]


def readable_dag_ids(user: Any, session: Any) -> set[str]:
    """The DAGs this user may read, as the auth manager decides (the same call as Airflow's DAG list)."""
    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session))


def _csv_stream(window: Window, dag_ids: set[str]) -> Iterator[str]:
    """The CSV, read in a session of its own: the request's session is closed while the response streams."""
    from airflow.utils.session import create_session

    with create_session() as session:
        yield from csv_lines(SpendQuery(session, window, dag_ids).calls())


def create_app() -> FastAPI:
    """The app Airflow mounts under ``/o3-spend``."""
    app = FastAPI(title="o3-mini spend", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=FileResponse)
    def page() -> FileResponse:
        """The page: static HTML and JavaScript that fetch ``api/summary`` (no data in it)."""
        return FileResponse(
            str(resources.files("airflow_o3.plugins") / "spend_page.html"), media_type="text/html"
        )

    @app.get("/api/summary")
    def summary(user: GetUserDep, session: SessionDep, days: DaysQuery = 7) -> dict[str, Any]:
        query = SpendQuery(session, Window.last(days), readable_dag_ids(user, session))
        return query.summary()

    @app.get("/api/spend.csv")
    def spend_csv(user: GetUserDep, session: SessionDep, days: DaysQuery = 7) -> StreamingResponse:
        window, dag_ids = Window.last(days), readable_dag_ids(user, session)
        name = f"o3-spend-{days}d-{datetime.now(UTC):%Y-%m-%d}.csv"
        return StreamingResponse(
            _csv_stream(window, dag_ids),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return app

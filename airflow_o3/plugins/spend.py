"""The o3-mini spend page as an Airflow plugin, registered by the ``airflow.plugins`` entry point.

Airflow imports this module in every component that loads plugins (scheduler, workers, DAG processor),
so it imports nothing heavy: the FastAPI app is built only when the API server asks for it. On Airflow 3
the plugin adds the app under ``/o3-spend`` and an entry *o3-mini spend* under *Browse*; on Airflow 2
it adds nothing (Airflow 2's webserver has no place for a FastAPI app, and its tasks record XComs in
another form).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from airflow import __version__ as airflow_version
from airflow.providers.common.compat.sdk import AirflowPlugin

URL_PREFIX = "/o3-spend"
"""Where the API server serves the page and its API."""
AIRFLOW_3 = int(airflow_version.split(".", 1)[0]) >= 3


@cache
def _fastapi_apps() -> list[dict[str, Any]]:
    from airflow_o3.plugins.spend_app import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "o3-mini spend"}]


class O3SpendPlugin(AirflowPlugin):
    """Spend of o3-mini calls per day, DAG and model, from the ``usage`` XComs the tasks recorded."""

    name = "airflow_o3_spend"
    external_views = (
        [
            {
                "name": "o3-mini spend",
                "href": f"{URL_PREFIX}/",
                "destination": "nav",
                "category": "browse",
                "url_route": "o3-spend",
            }
        ]
        if AIRFLOW_3
        else []
    )

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]  # a list in AirflowPlugin
        """The page's app, built when the API server first asks (never in a scheduler or worker)."""
        return _fastapi_apps() if AIRFLOW_3 else []

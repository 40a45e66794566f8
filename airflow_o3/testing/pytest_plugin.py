"""pytest fixtures for the o3-mini stand-in server, for the tests of your own DAGs (docs/testing.md).

Opt-in: installing airflow-o3 loads nothing into your pytest runs. Enable the fixtures with
``pytest_plugins = ("airflow_o3.testing.pytest_plugin",)`` in your top-level ``conftest.py``, or
``-p airflow_o3.testing.pytest_plugin`` on the command line (or in ``addopts``).

This module deliberately does not import Airflow, so loading the plugin costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_o3.testing.server import STANDIN_API_KEY, StandInServer

if TYPE_CHECKING:
    from collections.abc import Iterator

CONNECTION_ENV_VAR = "AIRFLOW_CONN_AIMLAPI_DEFAULT"


@pytest.fixture
def o3_standin() -> Iterator[StandInServer]:
    """A started stand-in server on a free port, stopped after the test."""
    with StandInServer() as server:
        yield server


@pytest.fixture
def o3_standin_connection(o3_standin: StandInServer, monkeypatch: pytest.MonkeyPatch) -> StandInServer:
    """The ``o3_standin`` server, with ``AIRFLOW_CONN_AIMLAPI_DEFAULT`` set to a connection for it.

    The connection's password is ``"standin-test-key"``; the variable is restored after the test.
    """
    monkeypatch.setenv(CONNECTION_ENV_VAR, o3_standin.connection_json(STANDIN_API_KEY))
    return o3_standin

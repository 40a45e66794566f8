"""The spend page as Airflow loads it: the entry point, a cheap import, and what each Airflow version gets.

Runs on Airflow 3.3 and 2.11. ``airflow plugins`` runs in a subprocess with the plugin in a plugins
folder (the entry point is only registered once the package is installed again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

from tests.dagrun import AIRFLOW_3

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
HEAVY = ("fastapi", "airflow_o3.plugins.spend_app", "airflow_o3.plugins.spend_query", "uvicorn")


def test_pyproject_registers_the_plugin_under_the_airflow_plugins_entry_point(monkeypatch):
    from airflow import plugins_manager

    if not AIRFLOW_3:  # Airflow 2 also checks the class against the plugins loaded so far
        monkeypatch.setattr(plugins_manager, "plugins", [])

    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    module, _, name = entry_points["airflow.plugins"]["o3_spend"].partition(":")
    plugin = getattr(import_module(module), name)
    assert plugins_manager.is_valid_plugin(plugin)
    assert plugin.name == "airflow_o3_spend"


def _airflow_plugins(tmp_path: Path) -> tuple[dict[str, object], str]:
    """``airflow plugins --output json`` with the plugin in a plugins folder: our entry, and stderr."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "o3_spend.py").write_text("from airflow_o3.plugins.spend import O3SpendPlugin\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins)}
    done = subprocess.run(
        [AIRFLOW, "plugins", "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    listed = json.loads(done.stdout[done.stdout.index("[") :])
    (ours,) = [plugin for plugin in listed if plugin["name"] == "airflow_o3_spend"]
    return ours, done.stdout + done.stderr


@pytest.mark.slow  # starts the airflow CLI (~3 s)
def test_airflow_loads_the_plugin_with_the_app_and_the_browse_entry_on_airflow_3_and_nothing_on_2(tmp_path):
    ours, output = _airflow_plugins(tmp_path)
    assert "Failed to import plugin" not in output and "Traceback" not in output
    if AIRFLOW_3:
        (app,) = ours["fastapi_apps"]
        assert (app["url_prefix"], app["name"]) == ("/o3-spend", "o3-mini spend")
        (view,) = ours["external_views"]
        assert (view["href"], view["category"], view["url_route"]) == ("/o3-spend/", "browse", "o3-spend")
    else:
        assert not any(
            ours.get(part) for part in ("flask_blueprints", "appbuilder_views", "appbuilder_menu_items")
        )

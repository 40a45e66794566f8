"""What the Airflow CLI shows of the provider: providers list/hooks, and tasks render."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dagrun import AIRFLOW_3, run_dag

pytestmark = pytest.mark.slow  # each test starts the airflow CLI (2-3 s of start-up)

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_cli(*args: str) -> str:
    completed = subprocess.run(
        [AIRFLOW, *args], capture_output=True, text=True, timeout=180, env=os.environ.copy(), check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_providers_list_shows_the_distribution():
    rows = [line for line in airflow_cli("providers", "list").splitlines() if line.startswith("airflow-o3 ")]
    assert len(rows) == 1
    assert "AI/ML API service" in rows[0]
    from airflow_o3 import __version__

    assert __version__ in rows[0]


def test_providers_hooks_shows_the_aimlapi_connection_type():
    rows = [line for line in airflow_cli("providers", "hooks").splitlines() if line.startswith("aimlapi ")]
    assert len(rows) == 1
    assert "airflow_o3.hooks.o3mini.O3MiniHook" in rows[0]
    assert "airflow-o3" in rows[0]
    assert "AI/ML API (o3-mini)" in rows[0]


@pytest.mark.usefixtures("airflow_db")
def test_tasks_render_shows_the_rendered_prompt_file(dag_file, test_dags_folder, o3_standin_connection):
    (test_dags_folder / "render_prompt.md.j2").write_text("Brief the {{ params.team }} team on {{ ds }}.\n")
    dag_file(
        """
        import pendulum
        from airflow.providers.common.compat.sdk import DAG
        from airflow_o3.operators import O3MiniOperator

        with DAG(dag_id="o3_render_check", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
                 params={"team": "night-shift"}):
            O3MiniOperator(
                task_id="ask", prompt="render_prompt.md.j2", system_prompt="Be brief about {{ params.team }}."
            )
        """,
        name="o3_render_check.py",
    )
    run_dag("o3_render_check").assert_success()
    # Airflow 3 finds the DAG through its bundles; Airflow 2 only looks in the folder it is given
    subdir = () if AIRFLOW_3 else ("--subdir", str(test_dags_folder))
    out = airflow_cli("tasks", "render", "o3_render_check", "ask", "2026-03-04", *subdir)
    assert "# property: prompt" in out
    assert "Brief the night-shift team on 2026-03-04." in out
    assert "Be brief about night-shift." in out

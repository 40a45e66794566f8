"""Run by scripts/smoke_wheel.sh inside the fresh venv: an installed airflow-o3 works end to end.

Checks that ``airflow_o3`` is the installed wheel (not the source tree) at the expected version,
that Airflow lists the provider and its connection type, and that ``airflow dags test`` runs a DAG
with ``O3MiniOperator`` against the stand-in server from ``airflow_o3.testing``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="o3_wheel_smoke", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(task_id="ask", prompt="Name three prime numbers for {{ ds }}.", reasoning_effort="low")
"""


def airflow(*args: str) -> str:
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    done = subprocess.run([airflow_bin, *args], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        sys.exit(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def main(expected_version: str) -> None:
    import airflow_o3
    from airflow_o3.testing import StandInServer

    location = Path(airflow_o3.__file__).resolve()
    assert "site-packages" in location.parts, f"airflow_o3 imported from {location}, not the wheel"
    assert airflow_o3.__version__ == expected_version, (airflow_o3.__version__, expected_version)

    home = Path(tempfile.mkdtemp(prefix="airflow-o3-smoke-home-"))
    dags = home / "dags"
    dags.mkdir()
    (dags / "o3_wheel_smoke.py").write_text(textwrap.dedent(DAG))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API_AUTH__JWT_SECRET": "airflow-o3-smoke-jwt-secret-not-a-real-secret",
        }
    )
    providers = airflow("providers", "list")
    assert "airflow-o3" in providers and expected_version in providers, providers[-2000:]
    hooks = airflow("providers", "hooks")
    assert "aimlapi" in hooks and "airflow_o3.hooks.o3mini.O3MiniHook" in hooks, hooks[-2000:]
    airflow("db", "migrate")

    with StandInServer() as server:
        os.environ["AIRFLOW_CONN_AIMLAPI_DEFAULT"] = server.connection_json("smoke-key")
        output = airflow("dags", "test", "o3_wheel_smoke", "2026-03-04")
        requests = server.chat_requests
    assert len(requests) == 1, f"{len(requests)} chat requests:\n{output[-3000:]}"
    body = requests[0].body
    assert body["messages"] == [{"role": "user", "content": "Name three prime numbers for 2026-03-04."}], body
    assert body["reasoning_effort"] == "low"
    assert "o3-mini call: model=o3-mini-2025-01-31" in output, output[-3000:]
    print(f"   airflow_o3 {airflow_o3.__version__} from {location.parent}")
    print(f"   one request sent: {json.dumps(body)[:120]}...")
    print(
        "   task log: " + next(line for line in output.splitlines() if "o3-mini call:" in line).strip()[:160]
    )


if __name__ == "__main__":
    main(sys.argv[1])

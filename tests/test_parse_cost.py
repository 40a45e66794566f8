"""Checks that need an interpreter of their own: what parsing a DAG (or loading the spend plugin) imports,
and how a DAG parses under ``[operators] default_deferrable``.

A module already imported by this pytest process would hide an import, so every check runs in a fresh
process. Starting Python and Airflow once per check cost ~2 s each; instead one subprocess imports
Airflow once and forks a child per check (``PROBES``), so each check still starts from a process in
which only Airflow's own start-up has run. Each test reads its own check's outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.operators.test_airflow_compat import STREAMING_DAG

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "dags"

# Each probe runs in a forked child; an exception fails it, the traceback is its message.
PROBES = {
    "operator_parse_time": """
import sys
from airflow.providers.common.compat.sdk import BaseOperator
BaseOperator(task_id="baseline")  # what Airflow loads for any operator (Airflow 2: pydantic...)
before = set(sys.modules)
from airflow_o3.operators import O3MiniOperator

class DuckModel:  # quacks like a pydantic model class: no pydantic import needed
    @classmethod
    def model_json_schema(cls):
        return {"title": "Duck", "type": "object", "properties": {"x": {"type": "integer"}}}

O3MiniOperator(task_id="a", prompt="p", response_format=DuckModel, json_retries=1, stream=True)
O3MiniOperator(task_id="b", prompt="p", response_format={"type": "object", "properties": {}})
O3MiniOperator(task_id="c", prompt="JSON please", response_format="json_object", render_only=True)
new = sorted(m for m in set(sys.modules) - before if not m.startswith("airflow_o3"))
assert new == [], new
""",
    "no_openlineage": f"""
import runpy, sys
from airflow.providers.common.compat.sdk import BaseOperator, DAG  # Airflow itself, as a baseline
before = set(sys.modules)
runpy.run_path({str(DAGS / "o3_daily_report.py")!r})
import airflow_o3.operators.o3mini
new = set(sys.modules) - before
loaded = sorted(m for m in new if "openlineage" in m or m == "airflow_o3.lineage")
assert not loaded, loaded
""",
    "taskflow_examples": f"""
import runpy, sys
from airflow.providers.common.compat.sdk import dag, task

@dag(dag_id="baseline", schedule=None, params={{"p": 1}})
def baseline():
    task(lambda: None, task_id="t")()

baseline()  # what Airflow itself loads to parse a TaskFlow DAG with params,
from airflow.providers_manager import ProvidersManager

ProvidersManager().initialize_providers_list()  # and to list the providers (jsonschema on 2.11)
before = set(sys.modules)
for name in ("o3_daily_report_taskflow", "o3_classify_tickets_taskflow", "o3_branch_tickets"):
    runpy.run_path({str(DAGS)!r} + "/" + name + ".py")
new = set(sys.modules) - before
heavy = sorted(m for m in new if m.split(".")[0] in ("requests", "httpx", "jsonschema", "pydantic"))
assert not heavy, heavy
""",
    "spend_plugin": """
import sys, airflow_o3.plugins.spend
heavy = ("fastapi", "airflow_o3.plugins.spend_app", "airflow_o3.plugins.spend_query", "uvicorn")
loaded = [m for m in heavy if m in sys.modules]
assert loaded == [], loaded
""",
}

# The config is read as the operators are built, so the child sets it before parsing the DAG.
PROBES["default_deferrable"] = f"""
import os, tempfile
from pathlib import Path
os.environ["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = "True"
from tests.operators.helpers import import_error
path = Path(tempfile.mkdtemp()) / "compat_default_deferrable.py"
path.write_text({STREAMING_DAG!r})
error = import_error(path)
assert error == "", error
"""

RUNNER = """
import json, os, sys, traceback
probes = json.loads(sys.stdin.read())
import airflow.providers.common.compat.sdk  # the start-up every probe shares, paid once

outcomes = {}
for name, source in probes.items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            exec(compile(source, name, "exec"), {"__name__": "__probe__"})
            outcome = "ok"
        except BaseException:
            outcome = traceback.format_exc()
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        outcome = pipe.read()
    os.waitpid(pid, 0)
    outcomes[name] = outcome or "the probe's process died without a word"
print(json.dumps(outcomes))
"""


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Any]:
    """Every probe's outcome: ``"ok"`` or the traceback of its failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RUNNER)],
        input=json.dumps(PROBES),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_parse_time_checks_import_nothing_outside_the_provider(outcomes):
    """Building operators with every feature at DAG parse loads no module beyond airflow_o3's own."""
    assert outcomes["operator_parse_time"] == "ok"


def test_parsing_a_dag_with_the_operator_imports_no_openlineage(outcomes):
    """Airflow's providers manager loads every provider's ``get_provider_info``; nothing more may load."""
    assert outcomes["no_openlineage"] == "ok"


def test_parsing_the_taskflow_examples_imports_nothing_heavy(outcomes):
    assert outcomes["taskflow_examples"] == "ok"


def test_importing_the_spend_plugin_loads_no_web_framework_and_no_query_code(outcomes):
    assert outcomes["spend_plugin"] == "ok"


def test_default_deferrable_config_lets_stream_and_json_retries_tasks_parse(outcomes):
    """Operators that need the worker still parse when ``[operators] default_deferrable`` is on."""
    assert outcomes["default_deferrable"] == "ok"

"""OpenLineage: the run facet when the provider is installed; no import of it when the DAG is parsed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_o3.testing import Reply
from tests.dagrun import AIRFLOW_3, run_dag

REPO = Path(__file__).resolve().parents[2]
USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 900,
    "total_tokens": 1020,
    "prompt_tokens_details": {"cached_tokens": 64},
    "completion_tokens_details": {"reasoning_tokens": 768},
}


def _context(task_id: str = "ask"):
    pushed: dict[str, object] = {}
    ti = SimpleNamespace(
        dag_id="lineage", task_id=task_id, run_id="manual__1", try_number=1, map_index=-1,
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
    )  # fmt: skip
    return {"ti": ti}, pushed


def test_the_run_facet_carries_model_prompt_hash_usage_and_cost(o3_standin_connection):
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")
    from airflow.providers.openlineage.extractors.base import DefaultExtractor
    from openlineage.client.serde import Serde

    from airflow_o3.operators import O3MiniOperator

    o3_standin_connection.script(Reply(content="Fine.", usage=USAGE))
    operator = O3MiniOperator(task_id="ask", system_prompt="Be brief.", prompt="How is the fleet?")
    context, pushed = _context()
    operator.execute(context)

    lineage = DefaultExtractor(operator).extract_on_complete(context["ti"])

    assert lineage.inputs == [] and lineage.outputs == []
    facet = Serde.to_dict(lineage.run_facets["airflow_o3"])
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "How is the fleet?"},
    ]
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert facet == {
        "_producer": facet["_producer"],
        "_schemaURL": facet["_schemaURL"],
        "model": "o3-mini-2025-01-31",
        "promptSha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "promptTokens": 120,
        "cachedPromptTokens": 64,
        "completionTokens": 900,
        "reasoningTokens": 768,
        "totalTokens": 1020,
        "costUsd": pushed["usage"]["usd_spent"],
        "creditsUsed": pushed["usage"]["credits_used"],
        "attempts": 1,
        "fromCache": False,
    }
    assert facet["_schemaURL"].endswith("#/$defs/O3MiniRunFacet")
    assert "How is the fleet" not in json.dumps(facet), "the prompt itself is never reported"


def test_the_prompt_hash_changes_with_the_rendered_prompt(o3_standin_connection):
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")
    hashes = set()
    from airflow_o3.operators import O3MiniOperator

    for prompt in ("Report on Monday.", "Report on Tuesday.", "Report on Monday."):
        operator = O3MiniOperator(task_id="ask", prompt=prompt)
        context, _ = _context()
        operator.execute(context)
        hashes.add(
            operator.get_openlineage_facets_on_complete(context["ti"]).run_facets["airflow_o3"].promptSha256
        )
    assert len(hashes) == 2


def test_a_dry_run_reports_no_facet():
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")
    from airflow_o3.operators import O3MiniOperator

    operator = O3MiniOperator(task_id="ask", prompt="Hello", render_only=True)
    context, _ = _context()
    operator.execute(context)
    assert operator.get_openlineage_facets_on_complete(context["ti"]).run_facets == {}


LINEAGE_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="o3_lineage", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    O3MiniOperator(task_id="ask", prompt="Summarise {{ params.topic }}.", params={"topic": "tides"})
"""


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.slow
def test_the_openlineage_listener_emits_the_facet_in_a_real_run(
    dag_file, test_dags_folder, o3_standin_connection, tmp_path
):
    """``airflow dags test`` in a subprocess with OpenLineage's file transport: what a backend receives."""
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")
    dag_file(LINEAGE_DAG, name="o3_lineage.py")
    if AIRFLOW_3:
        run_dag("o3_lineage").assert_success()  # registers the DAG in its bundle for the CLI
    events_file = tmp_path / "events.jsonl"
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "o3-tests",
    }
    subdir = () if AIRFLOW_3 else ("--subdir", str(test_dags_folder))
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "dags", "test", "o3_lineage", "2026-03-04", *subdir],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    complete = [
        e for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "o3_lineage.ask"
    ]  # fmt: skip
    assert len(complete) == 1, [(e["eventType"], e["job"]["name"]) for e in events]
    facet = complete[0]["run"]["facets"]["airflow_o3"]
    assert facet["model"] == "o3-mini-2025-01-31"
    expected = [{"role": "user", "content": "Summarise tides."}]
    canonical = json.dumps(expected, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert facet["promptSha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert facet["completionTokens"] > 0 and facet["reasoningTokens"] > 0
    assert facet["costUsd"] > 0

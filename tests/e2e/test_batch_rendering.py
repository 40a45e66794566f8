"""A batch renders its prompt exactly once per item, mapped or not; the data it pulls in is never rendered.

Airflow's mapped-operator renderer goes around an operator's own ``render_template_fields``: a batch
whose prompt Airflow rendered first, then rendered again per item, evaluated Jinja that arrived as data
(``params`` overridden by trigger conf, upstream XCom, items) and sent what it found: a connection's
password, a Variable. These runs go through ``dag.test()`` against the stand-in, mapped and unmapped.
"""

from __future__ import annotations

import pytest

from tests.dagrun import run_dag

pytestmark = pytest.mark.usefixtures("airflow_db")

KEY = "standin-test-key"
HOSTILE = "{{ conn.aimlapi_default.password }} / {{ var.value.o3_canary_var }} / {{ 6 * 7 }}"

DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG, task
from airflow_o3.operators import O3MiniBatchOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={{"note": "plain note"}}):

    @task
    def upstream_rows():
        return [[{{"text": {hostile!r}}}, {{"text": "b"}}], [{{"text": "c"}}]]

    @task
    def flat_rows():
        return [{{"text": {hostile!r}}}, {{"text": "e"}}]

    prompt = "Item {{{{ index }}}} of {{{{ ti.task_id }}}}: {{{{ item.text }}}} | note: {{{{ params.note }}}}"
    O3MiniBatchOperator.partial(task_id="mapped_literal", prompt=prompt).expand(
        items=[[{{"text": {hostile!r}}}, {{"text": "b"}}], [{{"text": "c"}}]]
    )
    O3MiniBatchOperator.partial(
        task_id="mapped_xcom", prompt=prompt, system_prompt="Note {{{{ params.note }}}}"
    ).expand(items=upstream_rows())
    O3MiniBatchOperator(task_id="unmapped_xcom", prompt=prompt, items=flat_rows())
    O3MiniBatchOperator(task_id="unmapped_literal", prompt=prompt, items=[{{"text": {hostile!r}}}])
"""


@pytest.fixture
def o3_standin(answering_standin):
    """Every reply names the prompt it answers (``answer_to``), so each result shows its request."""
    return answering_standin


@pytest.fixture
def canary_variable(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_O3_CANARY_VAR", "variable-canary-value")


def _sent(server) -> list[str]:
    return [message["content"] for request in server.chat_requests for message in request.body["messages"]]


def test_mapped_and_unmapped_batches_render_each_item_once_and_send_data_as_text(
    dag_file, o3_standin_connection, canary_variable
):
    dag_file(DAG.format(dag_id="o3_batch_render_once", hostile=HOSTILE))
    result = run_dag("o3_batch_render_once", run_conf={"note": HOSTILE})
    result.assert_success()

    sent = _sent(o3_standin_connection)
    assert len(o3_standin_connection.chat_requests) == 3 + 3 + 2 + 1
    for text in sent:
        assert KEY not in text
        assert "variable-canary-value" not in text
        assert "42" not in text
    assert f"Item 0 of mapped_literal: {HOSTILE} | note: {HOSTILE}" in sent
    assert "Item 1 of mapped_literal: b | note: " + HOSTILE in sent
    assert "Item 0 of mapped_literal: c | note: " + HOSTILE in sent
    assert f"Item 0 of mapped_xcom: {HOSTILE} | note: {HOSTILE}" in sent
    assert "Item 0 of mapped_xcom: c | note: " + HOSTILE in sent
    assert sent.count(f"Note {HOSTILE}") == 3, "the mapped system prompt is rendered once per item too"
    assert f"Item 0 of unmapped_xcom: {HOSTILE} | note: {HOSTILE}" in sent
    assert "Item 1 of unmapped_xcom: e | note: " + HOSTILE in sent
    assert f"Item 0 of unmapped_literal: {HOSTILE} | note: {HOSTILE}" in sent

    assert result.xcom("mapped_literal", map_index=1) == [
        f"Answer to: Item 0 of mapped_literal: c | note: {HOSTILE}"
    ]
    assert result.leaks(KEY) == []
    assert result.leaks("variable-canary-value") == []


def test_rendered_templates_of_a_batch_show_the_per_item_templates_as_written(
    dag_file, o3_standin_connection
):
    dag_file(DAG.format(dag_id="o3_batch_render_fields", hostile="x"))
    result = run_dag("o3_batch_render_fields")
    result.assert_success()
    for task_id, map_index in (("mapped_literal", 0), ("mapped_xcom", 1), ("unmapped_xcom", -1)):
        fields = result.rendered_fields(task_id, map_index)
        assert fields["prompt"] == (
            "Item {{ index }} of {{ ti.task_id }}: {{ item.text }} | note: {{ params.note }}"
        ), task_id

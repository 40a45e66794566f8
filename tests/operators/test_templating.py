"""Templating of an operator used outside a DAG (as in a unit test of a user's own code)."""

from __future__ import annotations

import jinja2
import pytest

from airflow_o3.operators import O3MiniOperator


def test_undefined_variable_fails_even_outside_a_dag():
    operator = O3MiniOperator(task_id="ask", prompt="Hello {{ nobody }}")
    with pytest.raises(jinja2.UndefinedError, match="nobody"):
        operator.render_template_fields({"params": {}})


def test_defined_variables_render_outside_a_dag():
    operator = O3MiniOperator(
        task_id="ask", prompt="Hello {{ params.who }}", system_prompt="Be {{ params.tone }}."
    )
    operator.render_template_fields({"params": {"who": "ops", "tone": "brief"}})
    assert operator.build_messages() == [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Hello ops"},
    ]


def test_a_dags_own_undefined_setting_is_respected():
    from airflow.providers.common.compat.sdk import DAG

    with DAG(dag_id="lenient", schedule=None, template_undefined=jinja2.Undefined):
        operator = O3MiniOperator(task_id="ask", prompt="Hello {{ nobody }}!")
    operator.render_template_fields({"params": {}})
    assert operator.prompt == "Hello !"

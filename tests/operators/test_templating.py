"""Templating: an operator used outside a DAG (as in a unit test of a user's own code), and which
prompts are template files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jinja2
import pytest

from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators import O3MiniOperator
from tests.dagrun import run_dag
from tests.operators.helpers import error_line, import_error

if TYPE_CHECKING:
    from pathlib import Path


def test_undefined_variable_fails_even_outside_a_dag():
    operator = O3MiniOperator(task_id="ask", prompt="Hello {{ nobody }}")
    with pytest.raises(jinja2.UndefinedError, match="nobody"):
        operator.render_template_fields({"params": {}})


def test_defined_variables_render_outside_a_dag():
    operator = O3MiniOperator(
        task_id="ask", prompt="Hello {{ params.who }}", system_prompt="Be {{ params.tone }}."
    )
    operator.render_template_fields({"params": {"who": "ops", "tone": "brief"}})
    assert operator.request().conversation() == [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Hello ops"},
    ]


def test_a_dags_own_undefined_setting_is_respected():
    from airflow.providers.common.compat.sdk import DAG

    with DAG(dag_id="lenient", schedule=None, template_undefined=jinja2.Undefined):
        operator = O3MiniOperator(task_id="ask", prompt="Hello {{ nobody }}!")
    operator.render_template_fields({"params": {}})
    assert operator.prompt == "Hello !"


TEMPLATE_FILE_DAG = """
import pendulum
from airflow.providers.common.compat.sdk import DAG
from airflow_o3.operators import O3MiniOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         template_searchpath=[{searchpath!r}], params={{"topic": "tides"}}):
    O3MiniOperator(task_id="ask", {arguments})
"""


def template_file_dag(dag_file, dag_id: str, searchpath: Path, arguments: str) -> Path:
    return dag_file(TEMPLATE_FILE_DAG.format(dag_id=dag_id, searchpath=str(searchpath), arguments=arguments))


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("extension", [".jinja2", ".jinja"])
def test_a_jinja2_or_jinja_prompt_file_is_read_and_rendered(
    dag_file, o3_standin_connection, tmp_path, extension
):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / f"ask{extension}").write_text("Explain {{ params.topic }} in one line.")
    template_file_dag(dag_file, "tpl_jinja2", tmp_path, f"prompt='prompts/ask{extension}'")
    run_dag("tpl_jinja2").assert_success()
    (request,) = o3_standin_connection.chat_requests
    assert request.body["messages"] == [{"role": "user", "content": "Explain tides in one line."}]


@pytest.mark.usefixtures("airflow_db")
def test_a_mapped_task_reads_its_prompt_file_and_keeps_inline_md_text_as_text(
    dag_file, o3_standin_connection, tmp_path
):
    (tmp_path / "ask.jinja2").write_text("Explain {{ params.topic }}.")
    dag_file(
        TEMPLATE_FILE_DAG.format(
            dag_id="tpl_mapped", searchpath=str(tmp_path), arguments="prompt='x'"
        ).replace(
            "O3MiniOperator(task_id=\"ask\", prompt='x')",
            "O3MiniOperator.partial(task_id='ask', prompt='ask.jinja2')"
            ".expand(system_prompt=['Write as in NOTES.md', 'Be brief.'])",
        )
    )
    run_dag("tpl_mapped").assert_success()
    sent = sorted(
        tuple(m["content"] for m in r.body["messages"]) for r in o3_standin_connection.chat_requests
    )
    assert sent == [("Be brief.", "Explain tides."), ("Write as in NOTES.md", "Explain tides.")]


def test_a_missing_template_file_fails_the_dag_file_saying_where_it_looked(
    dag_file, test_dags_folder, tmp_path
):
    path = template_file_dag(dag_file, "tpl_missing", tmp_path, "prompt='prompts/x.j2'")
    line = error_line(import_error(path))
    assert "ask: prompt names the template file 'prompts/x.j2', which is not there" in line
    assert f"(looked in: {test_dags_folder}, {tmp_path})" in line
    assert "Fix: create it" in line


def test_a_missing_template_file_in_messages_fails_the_dag_file_too(dag_file, tmp_path):
    messages = "messages=[{'role': 'developer', 'content': 'Be brief.'}, {'role': 'user', 'content': 'q.md'}]"
    line = error_line(import_error(template_file_dag(dag_file, "tpl_missing_msg", tmp_path, messages)))
    assert "ask: messages[1].content names the template file 'q.md', which is not there" in line


@pytest.mark.usefixtures("airflow_db")
def test_inline_text_ending_in_md_is_sent_as_text_even_when_a_same_named_file_exists(
    dag_file, o3_standin_connection, tmp_path
):
    prompt = "Summarise the {{ params.topic }} notes in README.md"
    (tmp_path / prompt).write_text("THE FILE, NOT THE PROMPT")
    template_file_dag(dag_file, "tpl_inline_md", tmp_path, f"prompt={prompt!r}")
    run_dag("tpl_inline_md").assert_success()
    (request,) = o3_standin_connection.chat_requests
    assert request.body["messages"] == [{"role": "user", "content": "Summarise the tides notes in README.md"}]


@pytest.mark.usefixtures("airflow_db")
def test_an_inline_system_prompt_ending_in_md_is_sent_as_text(dag_file, o3_standin_connection, tmp_path):
    template_file_dag(
        dag_file, "tpl_inline_sys", tmp_path, "prompt='Hi', system_prompt='Write as in NOTES.md'"
    )
    run_dag("tpl_inline_sys").assert_success()
    (request,) = o3_standin_connection.chat_requests
    assert request.body["messages"][0] == {"role": "developer", "content": "Write as in NOTES.md"}


@pytest.mark.parametrize("prompt", ["prompts/ask.tpl", "ask.prompt", "prompts/ask"])
def test_a_one_word_prompt_naming_a_file_that_is_no_template_is_refused_at_parse(prompt):
    with pytest.raises(InvalidRequestError) as raised:
        O3MiniOperator(task_id="ask", prompt=prompt)
    message = str(raised.value)
    assert message.startswith(f"ask: prompt {prompt!r} looks like the path of a file")
    assert ".j2, .jinja, .jinja2, .md, .txt" in message


def test_message_contents_and_urls_that_look_like_files_are_sent_as_text():
    operator = O3MiniOperator(
        task_id="ask",
        messages=[
            {"role": "user", "content": "Which file holds the figures?"},
            {"role": "assistant", "content": "figures.csv"},
            {"role": "user", "content": "https://example.com/report.html"},
        ],
    )
    operator.render_template_fields({"params": {}})
    assert [message["content"] for message in operator.request().conversation()][1:] == [
        "figures.csv",
        "https://example.com/report.html",
    ]


def test_a_template_file_named_outside_a_dag_fails_naming_nowhere():
    operator = O3MiniOperator(task_id="ask", prompt="prompts/ask.j2")
    with pytest.raises(InvalidRequestError, match="looked in: nowhere: the operator is in no DAG"):
        operator.render_template_fields({"params": {}})

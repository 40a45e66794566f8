"""airflow-o3-render: the dry-run check without Airflow running."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_o3.cli import main
from tests.contract import validate_request_body
from tests.dagrun import run_dag

REPO = Path(__file__).resolve().parent.parent
DAILY_REPORT = REPO / "dags" / "prompts" / "daily_report.md.j2"
FIGURES = {"date": "2026-01-31", "orders": 1284, "refunds": 17, "analyst_note": "Latency rose after 14:00."}
VARIABLES = {
    "ds": "2026-01-31",
    "params": {"audience": "the operations team"},
    "xcom": {"collect_figures": FIGURES},
}
REPORT_SCHEMA = {
    "title": "Report",
    "type": "object",
    "properties": {"headline": {"type": "string"}, "risks": {"type": "array", "items": {"type": "string"}}},
}


def render(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_prints_the_rendered_body_checked_against_the_contract(capsys):
    status, out, err = render(
        capsys,
        DAILY_REPORT,
        "--vars",
        json.dumps(VARIABLES),
        "--system-prompt",
        "Write for {{ params.audience }}.",
        "--reasoning-effort",
        "low",
        "--max-completion-tokens",
        "4000",
        "--stream",
        "--parameters",
        '{"seed": 3}',
    )
    assert (status, err) == (0, "")
    body = json.loads(out)
    validate_request_body(body, strict=True)
    assert body["messages"][0] == {"role": "developer", "content": "Write for the operations team."}
    report = body["messages"][1]["content"]
    assert report.startswith("Write the daily operations report for 2026-01-31, for the operations team.")
    assert "| orders | 1284 |" in report
    assert "Analyst's note: Latency rose after 14:00." in report
    assert (body["reasoning_effort"], body["max_completion_tokens"], body["seed"]) == ("low", 4000, 3)
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})


@pytest.mark.usefixtures("airflow_db")
def test_prints_the_same_body_an_operator_dry_run_pushes(capsys, dag_file, o3_standin_connection, tmp_path):
    schema_file = tmp_path / "report.schema.json"
    schema_file.write_text(json.dumps(REPORT_SCHEMA))
    dag_file(
        f"""
        import pendulum
        from airflow.providers.common.compat.sdk import DAG, task
        from airflow_o3.operators import O3MiniOperator

        with DAG(
            dag_id="cli_matches_dry_run",
            schedule=None,
            start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
            template_searchpath=[{str(DAILY_REPORT.parent)!r}],
            params={{"audience": "the operations team"}},
        ):

            @task
            def collect_figures():
                return {FIGURES!r}

            collect_figures() >> O3MiniOperator(
                task_id="write_report",
                system_prompt="Write for {{{{ params.audience }}}}.",
                prompt="daily_report.md.j2",
                reasoning_effort="low",
                response_format={REPORT_SCHEMA!r},
                stream=True,
                render_only=True,
            )
        """
    )
    result = run_dag("cli_matches_dry_run")
    result.assert_success()
    assert o3_standin_connection.chat_requests == []
    capsys.readouterr()  # the run's log
    status, out, err = render(
        capsys,
        DAILY_REPORT,
        "--vars",
        json.dumps({**VARIABLES, "ds": f"{result.logical_date:%Y-%m-%d}"}),
        "--system-prompt",
        "Write for {{ params.audience }}.",
        "--reasoning-effort",
        "low",
        "--response-format",
        schema_file,
        "--stream",
    )
    assert (status, err) == (0, "")
    assert json.loads(out) == result.xcom("write_report")


def test_runs_without_importing_airflow():
    script = textwrap.dedent(
        f"""
        import sys
        from airflow_o3.cli import main
        status = main([{str(DAILY_REPORT)!r}, "--vars", {json.dumps(VARIABLES)!r}])
        loaded = sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))
        print("AIRFLOW MODULES", loaded, file=sys.stderr)
        sys.exit(status)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "AIRFLOW MODULES []" in done.stderr
    assert json.loads(done.stdout)["messages"][0]["role"] == "user"


@pytest.mark.parametrize(
    "command",
    [[str(Path(sys.executable).parent / "airflow-o3-render")], [sys.executable, "-m", "airflow_o3.cli"]],
    ids=["installed-script", "python-m"],
)
def test_the_installed_script_and_python_m_both_run(command):
    done = subprocess.run(
        [*command, str(DAILY_REPORT), "--vars", json.dumps(VARIABLES), "--reasoning-effort", "high"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reasoning_effort"] == "high"


def test_an_undefined_variable_exits_1_naming_it_and_the_fix(capsys):
    variables = {"xcom": {"collect_figures": FIGURES}}
    status, out, err = render(capsys, DAILY_REPORT, "--vars", json.dumps(variables))
    assert (status, out) == (1, "")
    assert err.startswith("airflow-o3-render: error: ")
    assert "'params' is undefined (fix: add the variable to --vars)" in err


def test_a_missing_xcom_value_names_the_task_and_how_to_add_it(capsys):
    variables = {"ds": "2026-01-31", "params": {"audience": "x"}}
    status, _, err = render(capsys, DAILY_REPORT, "--vars", json.dumps(variables))
    assert status == 1
    assert "XCom 'return_value' of task 'collect_figures'" in err
    assert '{"xcom": {"collect_figures": <value>}}' in err


def test_vars_file_includes_and_xcom_keys_other_than_return_value(capsys, tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "footer.j2").write_text("Answer in {{ params.language }}.")
    template = tmp_path / "ask.j2"
    template.write_text(
        "Rows: {{ ti.xcom_pull(task_ids='load', key='rows') | join(', ') }}.\n{% include 'footer.j2' %}"
    )
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"params": {"language": "French"}, "xcom": {"load.rows": ["a", "b"]}}))
    status, out, err = render(capsys, template, "--vars-file", variables, "--searchpath", tmp_path / "shared")
    assert (status, err) == (0, "")
    assert json.loads(out)["messages"] == [{"role": "user", "content": "Rows: a, b.\nAnswer in French."}]


def test_a_schema_file_is_sent_in_strict_form(capsys, tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(REPORT_SCHEMA))
    status, out, _ = render(
        capsys, DAILY_REPORT, "--vars", json.dumps(VARIABLES), "--response-format", schema_file
    )
    assert status == 0
    spec = json.loads(out)["response_format"]["json_schema"]
    assert (spec["name"], spec["strict"]) == ("Report", True)
    assert spec["schema"]["required"] == ["headline", "risks"]
    assert spec["schema"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--response-format", "json_object"], "needs the word JSON in the prompt"),
        (["--parameters", '{"temperature": 0.2}'], "temperature: o3-mini refuses this parameter"),
        (["--parameters", '{"reasoning_effort": "low"}'], "pass reasoning_effort as its own option"),
        (
            ["--max-completion-tokens", "0"],
            "max_completion_tokens: got 0 (fix: use a whole number from 1 to 100000",
        ),
        (
            ["--parameters", '{"stop": ["a", "b", "c", "d", "e"]}'],
            "parameters['stop']: got ['a', 'b', 'c', 'd', 'e'] (fix: use a string or a list of at most 4",
        ),
        (["--parameters", '{"n": 0}'], "parameters['n']: got 0 (fix: use a whole number of 1 or more)"),
        (["--response-format", "nope.json"], "is neither 'json_object', 'text' nor a file"),
        (["--parameters", "{seed: 1}"], "--parameters is not valid JSON"),
    ],
)
def test_requests_the_operator_would_refuse_exit_1_with_the_field_and_fix(capsys, options, message):
    status, out, err = render(capsys, DAILY_REPORT, "--vars", json.dumps(VARIABLES), *options)
    assert (status, out) == (1, "")
    assert message in err
    assert "Input should be" not in err, "the allowed values are said once, in the fix"


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--reasoning-effort", "extreme"])
    assert raised.value.code == 2
    assert "usage: airflow-o3-render" in capsys.readouterr().err

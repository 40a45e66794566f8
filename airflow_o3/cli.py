"""``airflow-o3-render``: an ``O3MiniOperator`` with ``render_only=True``, without Airflow (usage in the
README). The body is built and checked by the operator's own :class:`~airflow_o3.call.O3Call`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from airflow_o3.call import O3Call
from airflow_o3.errors import InvalidRequestError
from airflow_o3.parameters import REASONING_EFFORTS
from airflow_o3.settings import DEFAULT_MODEL

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PROGRAM = "airflow-o3-render"


def recorded_xcoms(values: Mapping[str, Any]) -> SimpleNamespace:
    """Stands in for ``ti`` in a template: its ``xcom_pull`` reads ``values``, the ``xcom`` variable
    (``{"task_id": return value, "task_id.key": value pushed under key}``)."""

    def value(task_id: str, key: str) -> Any:
        name = task_id if key == "return_value" else f"{task_id}.{key}"
        if name not in values:
            raise InvalidRequestError(
                f"the template pulls XCom {key!r} of task {task_id!r}, which the variables do not hold "
                f'(fix: add {{"xcom": {{"{name}": <value>}}}} to --vars)'
            )
        return values[name]

    def xcom_pull(task_ids: str | Sequence[str] | None = None, key: str = "return_value", **_: Any) -> Any:
        if isinstance(task_ids, str):
            return value(task_ids, key)
        return [value(task_id, key) for task_id in task_ids or ()]

    return SimpleNamespace(xcom_pull=xcom_pull)


def render(
    template: str, variables: Mapping[str, Any], *, searchpath: Sequence[Path] = (), where: str = "template"
) -> str:
    """Render a prompt template as Airflow would: sandboxed Jinja, an undefined name is an error.

    :param variables: the template's variables; ``xcom`` feeds ``ti.xcom_pull``.
    :param searchpath: folders where templates it includes are found.
    :param where: what the template is, for error messages (its file name).
    """
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader([str(folder) for folder in searchpath]),
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.do"],
        cache_size=0,
    )
    context = {"ti": recorded_xcoms(variables.get("xcom") or {}), **variables}
    try:
        return env.from_string(template).render(context)
    except jinja2.TemplateSyntaxError as error:
        raise InvalidRequestError(
            f"{where} line {error.lineno}: {error.message} (fix: correct the template)"
        ) from None
    except jinja2.UndefinedError as error:
        raise InvalidRequestError(f"{where}: {error.message} (fix: add the variable to --vars)") from None


def request_call(arguments: argparse.Namespace, prompt: str, system_prompt: str | None) -> O3Call:
    """The call an ``O3MiniOperator`` with these options makes, for the rendered prompts: the options
    are its arguments of the same name (the others are not read); it refuses what the operator would."""
    options = {
        **vars(arguments),
        "prompt": prompt,
        "system_prompt": system_prompt,
        "parameters": _json_option(arguments.parameters, "--parameters") if arguments.parameters else None,
        "response_format": _response_format(arguments.response_format),
    }
    return O3Call.from_arguments(options, own="option")


def _json_option(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidRequestError(f"{option} is not valid JSON: {error}") from None


def _response_format(value: str | None) -> Any:
    if value is None or value in ("text", "json_object"):
        return value
    path = Path(value)
    if not path.is_file():
        raise InvalidRequestError(
            f"--response-format {value!r} is neither 'json_object', 'text' nor a file (fix: pass the path "
            "of a JSON Schema file)"
        )
    return _json_option(path.read_text(encoding="utf-8"), f"--response-format file {value}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Render an O3MiniOperator prompt template with JSON variables and print the request body "
            "it would send (checked against the o3-mini contract). Sends nothing; needs no Airflow."
        ),
    )
    parser.add_argument(
        "template", type=Path, help="the prompt template file (.j2, .jinja, .jinja2, .md, .txt)"
    )
    variables = parser.add_mutually_exclusive_group()
    variables.add_argument(
        "--vars", help='template variables as JSON, e.g. \'{"params": {"topic": "tides"}}\''
    )
    variables.add_argument("--vars-file", type=Path, help="a JSON file holding the template variables")
    parser.add_argument(
        "--searchpath",
        type=Path,
        action="append",
        default=[],
        help="more folders to find included templates in",
    )
    parser.add_argument(
        "--system-prompt", help="the system prompt, a template rendered with the same variables"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"the model (default {DEFAULT_MODEL})")
    parser.add_argument("--reasoning-effort", choices=REASONING_EFFORTS)
    parser.add_argument("--max-completion-tokens", type=int)
    parser.add_argument(
        "--response-format",
        help="'json_object', 'text', or the path of a JSON Schema file for structured output",
    )
    parser.add_argument("--stream", action="store_true", help="build the streamed request")
    parser.add_argument(
        "--parameters", help="other contract parameters as JSON (tools, tool_choice, n, seed, ...)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.vars_file is not None:
            variables = _json_option(
                args.vars_file.read_text(encoding="utf-8"), f"--vars-file {args.vars_file}"
            )
        else:
            variables = _json_option(args.vars or "{}", "--vars")
        if not isinstance(variables, dict):
            raise InvalidRequestError("the template variables must be a JSON object")
        searchpath = [args.template.parent, *args.searchpath]
        template = args.template.read_text(encoding="utf-8")
        prompt = render(template, variables, searchpath=searchpath, where=str(args.template))
        system_prompt = None
        if args.system_prompt is not None:
            system_prompt = render(
                args.system_prompt, variables, searchpath=searchpath, where="--system-prompt"
            )
        call = request_call(args, prompt, system_prompt)
        body = call.body(args.model, call.conversation())
    except (InvalidRequestError, OSError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

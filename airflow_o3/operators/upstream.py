"""Upstream data by name: ``inputs={"figures": collect.output}`` and ``{{ inputs.figures }}`` in a prompt.

``inputs`` is a template field, so an ``XComArg`` in it makes Airflow create the dependency; a
``ti.xcom_pull(task_ids="x")`` in a template depends on the author writing ``x >> task``, and a
missing edge fails the task before it sends anything (``docs/taskflow.md``). Imported at DAG parse:
jinja2 is loaded only when a task renders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_o3.errors import InvalidRequestError

if TYPE_CHECKING:
    import jinja2
    from airflow.providers.common.compat.sdk import Context
    from jinja2 import nodes

INPUTS_KEY = "inputs"
"""The name of the upstream values in the template context: ``{{ inputs.<name> }}``."""

_TASK_INSTANCE_NAMES = frozenset({"ti", "task_instance"})
_ELSEWHERE = frozenset({"dag_id", "run_id", "include_prior_dates"})
"""``xcom_pull`` arguments that read another DAG or run, where this run's edges say nothing."""


def checked_inputs(task_id: str | None, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``inputs`` argument as a dict, refused at DAG parse when a name cannot be used in a template.

    :param task_id: the task, named in the message.
    :param inputs: names mapped to upstream outputs (``task.output``, a TaskFlow call's result,
        ``XComArg(op, key="...")``) or plain values.
    :raises InvalidRequestError: ``inputs`` is not a mapping, or a name is not a Python identifier.
    """
    if inputs is None:
        return {}
    if not isinstance(inputs, Mapping):
        raise InvalidRequestError(
            f"{task_id}: inputs is a {type(inputs).__name__} (fix: pass a dict of names to upstream "
            'outputs, e.g. inputs={"figures": collect_figures()})'
        )
    bad = [name for name in inputs if not (isinstance(name, str) and name.isidentifier())]
    if bad:
        raise InvalidRequestError(
            f"{task_id}: inputs names {bad!r} cannot be written as {{{{ inputs.<name> }}}} "
            "(fix: use names made of letters, digits and underscores, not starting with a digit)"
        )
    return dict(inputs)


def missing_upstream_pulls(operator: Any, jinja_env: jinja2.Environment | None = None) -> list[str]:
    """Why each ``ti.xcom_pull(task_ids=...)`` of the task's templates would read nothing: the task
    it names (written out in the template) is not upstream of this one, or not in the DAG.

    Usable in a DAG's own tests: ``assert missing_upstream_pulls(dag.get_task("ask")) == []``.

    :param operator: the task, in its DAG.
    :param jinja_env: the environment to parse with; the task's own by default.
    :return: one message per missing dependency, naming the field and the fix; ``[]`` when none.
    """
    if not operator.has_dag():
        return []
    dag = operator.dag
    env = jinja_env or operator.get_template_env()
    in_dag = dag.get_task(operator.task_id)
    upstream = set(in_dag.get_flat_relative_ids(upstream=True)) | {operator.task_id}
    problems = []
    for field in operator.template_fields:
        for task_id in sorted(pulled_task_ids(env, getattr(operator, field, None)) - upstream):
            problems.append(_missing_message(operator.task_id, field, task_id, dag.has_task(task_id)))
    return problems


def _missing_message(task_id: str, field: str, pulled: str, exists: bool) -> str:
    if not exists:
        return (
            f"{task_id}: {field} pulls ti.xcom_pull(task_ids={pulled!r}), and the DAG has no task "
            f"{pulled!r} (fix: correct the task id)"
        )
    return (
        f"{task_id}: {field} pulls ti.xcom_pull(task_ids={pulled!r}), but {pulled} does not run before "
        f"{task_id}, so the pull reads nothing (fix: add `{pulled} >> {task_id}`, or pass "
        f'inputs={{"{pulled}": {pulled}.output}} and write {{{{ inputs.{pulled} }}}})'
    )


def pulled_task_ids(env: jinja2.Environment, value: Any) -> set[str]:
    """The task ids written out in ``ti.xcom_pull(...)`` calls of every template in ``value`` (a
    string, or the strings inside lists and dicts). Pulls from another DAG or run (``dag_id=``,
    ``run_id=``, ``include_prior_dates=``) and task ids computed in the template are left out: only a
    literal id read from this run can be checked."""
    import jinja2

    found: set[str] = set()
    for text in _strings(value):
        if "xcom_pull" not in text:
            continue
        try:
            tree = env.parse(text)
        except jinja2.TemplateSyntaxError:
            continue  # rendering reports it, with its line
        for call in tree.find_all(jinja2.nodes.Call):
            found |= _literal_task_ids(call)
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _literal_task_ids(call: nodes.Call) -> set[str]:
    from jinja2 import nodes

    target = call.node
    if not (isinstance(target, nodes.Getattr) and target.attr == "xcom_pull"):
        return set()
    if not (isinstance(target.node, nodes.Name) and target.node.name in _TASK_INSTANCE_NAMES):
        return set()
    keywords = {keyword.key: keyword.value for keyword in call.kwargs}
    if _ELSEWHERE.intersection(keywords):
        return set()
    argument = keywords.get("task_ids", call.args[0] if call.args else None)
    if isinstance(argument, nodes.Const) and isinstance(argument.value, str):
        return {argument.value}
    if isinstance(argument, nodes.List | nodes.Tuple):
        items = argument.items
        return {item.value for item in items if isinstance(item, nodes.Const) and isinstance(item.value, str)}
    return set()


def render_with_inputs(
    operator: Any,
    render: Callable[..., Any],
    content: Any,
    context: Context,
    jinja_env: jinja2.Environment | None,
    seen_oids: set[int] | None,
) -> Any:
    """An operator's ``render_template`` with ``inputs``: once per rendering, fail when a template
    pulls a task that does not run before this one (:func:`missing_upstream_pulls`) and put the
    task's resolved ``inputs`` into the context; then render ``content`` with ``render`` (the
    operator's inherited ``render_template``). The ``inputs`` field itself renders to the values
    resolved then. Upstream outputs are resolved, never rendered: data holding ``{{`` reaches the
    prompt as it is. Works for mapped and unmapped tasks alike, whatever the order of the fields.

    :raises AirflowFailException: naming each template field, the pulled task and the edge to add.
    """
    if INPUTS_KEY not in context:
        problems = missing_upstream_pulls(operator, jinja_env)
        if problems:
            raise AirflowFailException("; ".join(problems))
        resolved: dict[str, Any] = {}
        context[INPUTS_KEY] = resolved  # type: ignore[literal-required]  # our own key, read by our templates
        for name, value in (getattr(operator, INPUTS_KEY, None) or {}).items():
            resolved[name] = operator.render_template(value, context, jinja_env)
    if content and content is getattr(operator, INPUTS_KEY, None):
        return context[INPUTS_KEY]  # type: ignore[literal-required]
    return render(content, context, jinja_env, seen_oids)

"""One request path: the renamed arguments, the request object every path uses, and a subclass that sets
its prompt in ``execute`` (the decorator and the branch operator do so), run against the stand-in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_o3.deprecations import O3DeprecationWarning
from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators import O3MiniBatchOperator, O3MiniOperator
from airflow_o3.testing import Reply, stub_context
from tests.helpers import FAST_RETRY

NEW_NAMES = {"request_retry": FAST_RETRY, "read_timeout": 7.5, "render_only": True}
OLD_NAMES = {"retry": FAST_RETRY, "timeout": 7.5, "dry_run": True}


@pytest.mark.parametrize("operator_class", [O3MiniOperator, O3MiniBatchOperator])
def test_request_retry_read_timeout_and_render_only_are_the_arguments(operator_class, o3_standin_connection):
    extra = {"items": ["x"]} if operator_class is O3MiniBatchOperator else {}
    operator = operator_class(task_id="ask", prompt="Hi {{ 1 + 1 }}", **NEW_NAMES, **extra)
    result = operator.execute(stub_context())
    assert (operator.request_retry, operator.read_timeout, operator.render_only) == (FAST_RETRY, 7.5, True)
    assert o3_standin_connection.chat_requests == [], "render_only sends nothing"
    # execute() alone renders no template field; the batch renders its prompt per item itself
    sent = "Hi 2" if operator_class is O3MiniBatchOperator else "Hi {{ 1 + 1 }}"
    bodies = result if operator_class is O3MiniBatchOperator else [result]
    assert [body["messages"] for body in bodies] == [[{"role": "user", "content": sent}]]


@pytest.mark.parametrize("operator_class", [O3MiniOperator, O3MiniBatchOperator])
def test_the_old_argument_names_warn_naming_the_new_ones_and_keep_working(operator_class):
    extra = {"items": ["x"]} if operator_class is O3MiniBatchOperator else {}
    with pytest.warns(O3DeprecationWarning) as warned:
        operator = operator_class(task_id="ask", prompt="Hi", **OLD_NAMES, **extra)
    messages = " ".join(str(warning.message) for warning in warned)
    for old, new in zip(OLD_NAMES, NEW_NAMES, strict=True):
        assert f"{old} is renamed {new}" in messages
    assert (operator.request_retry, operator.read_timeout, operator.render_only) == (FAST_RETRY, 7.5, True)


def test_the_old_names_work_in_partial_too():
    with pytest.warns(O3DeprecationWarning, match="retry is renamed request_retry"):
        O3MiniOperator.partial(task_id="ask", retry=FAST_RETRY).expand(prompt=["a", "b"])


def test_a_subclass_that_sets_its_prompt_in_execute_sends_that_prompt(o3_standin_connection):
    class Ask(O3MiniOperator):
        def execute(self, context):
            self.prompt = "Set in execute"
            return super().execute(context)

    o3_standin_connection.script(Reply("Done as set."))
    context = stub_context()
    result = Ask(task_id="ask", prompt="As written", request_retry=FAST_RETRY).execute(context)
    assert o3_standin_connection.chat_requests[0].body["messages"] == [
        {"role": "user", "content": "Set in execute"}
    ]
    assert result == "Done as set."
    assert context["ti"].xcoms["completion"]["from_cache"] is False


def test_a_subclass_that_sets_its_messages_in_execute_sends_them(o3_standin_connection):
    class Converse(O3MiniOperator):
        def execute(self, context):
            self.prompt, self.messages = None, [{"role": "user", "content": "From execute"}]
            return super().execute(context)

    Converse(task_id="ask", prompt="As written").execute(stub_context())
    assert o3_standin_connection.chat_requests[0].body["messages"] == [
        {"role": "user", "content": "From execute"}
    ]


def test_the_batch_is_no_operator_subclass_and_forbids_nothing_it_inherits():
    assert not issubclass(O3MiniBatchOperator, O3MiniOperator)


def test_the_render_command_refuses_a_parameter_as_the_operator_does(tmp_path):
    template = tmp_path / "ask.j2"
    template.write_text("Hello")
    done = subprocess.run(
        [sys.executable, "-m", "airflow_o3.cli", str(template), "--parameters", '{"seed": 0}'],
        capture_output=True,
        text=True,
    )
    with pytest.raises(InvalidRequestError) as raised:
        O3MiniOperator(task_id="ask", prompt="Hello", parameters={"seed": 0})
    assert done.returncode == 1
    assert str(raised.value).removeprefix("ask: ") in done.stderr


def test_the_request_object_names_the_empty_field_after_rendering():
    from airflow_o3.call import O3Call

    call = O3Call.from_arguments(
        {"messages": [{"role": "user", "content": "{{ a }}"}, {"role": "user", "content": "b"}]},
        {"task_id": "ask"},
    )
    rendered = [{"role": "user", "content": "fine"}, {"role": "user", "content": "  "}]
    with pytest.raises(InvalidRequestError, match=r"the rendered messages\[1\]\.content is empty"):
        call.conversation(lambda value: rendered)


def test_a_batch_renders_every_content_of_its_conversation_per_item(o3_standin_connection):
    conversation = [
        {"role": "developer", "content": "Row {{ index }}."},
        {"role": "user", "content": "Industry of {{ item.company }}? {{ item.note }}"},
    ]
    items = [{"company": "A", "note": "{{ 6 * 7 }}"}, {"company": "B", "note": ""}]
    O3MiniBatchOperator(task_id="enrich", items=items, messages=conversation).execute(stub_context())
    sent = sorted(
        (request.body["messages"] for request in o3_standin_connection.chat_requests),
        key=lambda messages: messages[0]["content"],
    )
    assert sent == [
        [
            {"role": "developer", "content": "Row 0."},
            {"role": "user", "content": "Industry of A? {{ 6 * 7 }}"},
        ],
        [{"role": "developer", "content": "Row 1."}, {"role": "user", "content": "Industry of B? "}],
    ]

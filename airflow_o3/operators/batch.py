"""The batch operator: one task asks o3-mini once per item of a list, concurrently, in input order.

Dynamic task mapping costs a task instance per row (tens of milliseconds each in ``dag.test()``,
seconds each under a scheduler) and fills the grid view; this operator sends thousands of calls from
one task. Like the operator module, it imports nothing heavy at DAG parse time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_o3.batch import ITEM_ERROR_POLICIES, BatchLimits, ItemFailure
from airflow_o3.budget import Budget
from airflow_o3.errors import InvalidRequestError
from airflow_o3.operators.o3mini import (
    O3MiniOperator,
    _task_failure_on_final_errors,
    client_request_id,
    names_template_file,
    reply_value,
)

if TYPE_CHECKING:
    import jinja2
    from airflow.providers.common.compat.sdk import Context

    from airflow_o3.batch import BatchOutcome, ItemErrorPolicy
    from airflow_o3.hooks.o3mini import O3MiniHook, PreparedCall
    from airflow_o3.ratecontrol import RateController
    from airflow_o3.response import Completion

PER_ITEM_FIELDS: tuple[str, ...] = ("prompt", "system_prompt", "messages")
"""Template fields rendered once per item, with ``item`` and ``index`` in the context."""


class O3MiniBatchOperator(O3MiniOperator):
    """Ask o3-mini once per item of a list, up to ``max_concurrency`` calls at a time; return the
    replies in input order.

    The prompt is a Jinja template rendered once per item, with the item as ``item`` and its position
    as ``index`` besides the usual context (``params``, ``ti``, macros). An item's values are data:
    they are sent as text and never rendered again, even when they hold ``{{ ... }}``. Every item's
    request is rendered and checked before the first one is sent, so a template error costs nothing.

    The return value (XCom ``return_value``) is the list of results, one per item, in input order:
    the reply text, or what the reply is with ``response_format``, tools or ``n`` (as for
    :class:`O3MiniOperator`); ``None`` for an item that failed or was not sent. Also pushed:

    - ``usage``: the usage of every item's reply added up (replies read from the response cache
      included, with the usage of the call that produced them), and ``items``, how many were added;
    - ``usage_per_item``: each item's usage record, ``None`` where there is no reply;
    - ``errors``: ``{"index", "error", "message", "status"}`` for each item without a result;
    - ``batch``: counts (``items``, ``succeeded``, ``failed``, ``not_sent``, ``from_cache``), time
      (``elapsed_s``, ``items_per_s``), ``rate_limited`` (429s met), ``spend`` (what this try paid:
      ``requests``, ``total_tokens``, ``usd``) and ``budget_reached``.

    A progress line (items done, failed, not sent, read from the cache, rate, ETA, spend) is logged
    every ``progress_interval`` seconds; the per-call summary and cache lines are logged at DEBUG
    level. The last line counts as the ``batch`` XCom does.

    Killing the task (``on_kill``) or reaching its ``execution_timeout`` stops the batch at once: no
    request starts any more and the workers waiting for their turn leave. A 429's wait is capped by
    the retry settings (``max_retry_after``, ``max_retry_seconds``), whatever the service asks.

    The batch renders its prompt itself, once per item, whether it is mapped
    (``.partial(prompt=...).expand(items=...)``) or not. So the UI's Rendered Templates view and
    ``airflow tasks render`` show ``prompt``, ``system_prompt`` and ``messages`` as written, beside the
    rendered ``items`` and ``model``; ``dry_run=True`` logs and returns every item's exact request.

    The batch runs in the worker (``deferrable`` does not apply); ``stream`` and ``json_retries`` are
    not available. All other arguments are those of :class:`O3MiniOperator`.

    :param items: the list to enrich, usually an upstream task's output (``items=load_rows()``) or a
        template that renders to a list (with ``render_template_as_native_obj=True`` on the DAG).
    :param prompt: the user message template, rendered per item: ``"Classify: {{ item.text }}"``.
    :param system_prompt: instructions sent before each prompt (``developer`` role), rendered per item.
    :param messages: instead of ``prompt``, a conversation whose contents are rendered per item.
    :param limits: how hard the batch may push the service, a :class:`~airflow_o3.batch.BatchLimits`
        or a dict: ``max_concurrency`` (calls in flight, default 16), ``requests_per_minute`` and
        ``tokens_per_minute`` (fixed caps). Whatever the caps, all the batch's workers slow down
        together when the service answers 429, honouring its ``Retry-After`` and rate-limit headers.
    :param budget: the most this task may spend, a :class:`~airflow_o3.budget.Budget` or a dict:
        ``max_total_tokens``, ``max_cost_usd``, and ``on_exceeded``: ``"fail"`` (default) fails the
        task once a limit is crossed, ``"stop"`` ends it with the results so far. Either way no new
        request starts after the crossing, and the log says what was spent. Cache hits cost nothing.
    :param on_item_error: ``"fail"`` (default): the first item that fails stops the batch and fails
        the task; ``"continue"``: a failed item's result is ``None``, its error is listed in the
        ``errors`` XCom, and the others go on. A wrong key or an empty account stops the batch either way.
    :param min_balance_usd: before the first request, read the account's balance and refuse to start
        (a final error, nothing sent) when the batch's estimated cost would leave less than this many
        dollars. The estimate is at the list price: each request's text as prompt tokens plus its
        ``max_completion_tokens`` (else 4,000) per choice; replies the cache holds are counted too.
    :param progress_interval: seconds between two progress lines in the log.
    :param cache: as for :class:`O3MiniOperator`; with it on, a retry of a failed or stopped batch
        reads the replies of the items that completed and pays only for the others.
    """

    template_fields: Sequence[str] = ("items", "prompt", "system_prompt", "messages", "model")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **O3MiniOperator.template_fields_renderers,
        "items": "json",
    }
    ui_color = "#c2ecd5"
    _rate_control: RateController | None = None
    """The running batch's controller, which :meth:`on_kill` stops."""

    def __init__(
        self,
        *,
        items: Any,
        prompt: str | None = None,
        system_prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        limits: BatchLimits | Mapping[str, Any] | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
        on_item_error: ItemErrorPolicy = "fail",
        min_balance_usd: float | None = None,
        progress_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        for name, why in (
            ("stream", "a batch logs its progress, not each reply as it is written"),
            ("json_retries", "a batch does not ask again; failed items are listed in the errors XCom"),
            ("deferrable", "a batch runs in the worker; max_concurrency keeps it short"),
        ):
            if kwargs.pop(name, None):
                raise InvalidRequestError(f"{task_id}: {name} is not available in a batch ({why})")
        super().__init__(
            prompt=prompt, system_prompt=system_prompt, messages=messages, deferrable=False, **kwargs
        )
        try:
            self.limits = BatchLimits.coerce(limits)
            self.budget = Budget.coerce(budget)
        except InvalidRequestError as error:
            raise InvalidRequestError(f"{self.task_id}: {error}") from None
        if on_item_error not in ITEM_ERROR_POLICIES:
            raise InvalidRequestError(
                f"{self.task_id}: on_item_error is {on_item_error!r} (fix: use 'fail' or 'continue')"
            )
        if not progress_interval > 0:
            raise InvalidRequestError(
                f"{self.task_id}: progress_interval is {progress_interval!r} (fix: use seconds above 0)"
            )
        if min_balance_usd is not None and (
            isinstance(min_balance_usd, bool)
            or not isinstance(min_balance_usd, int | float)
            or min_balance_usd < 0
        ):
            raise InvalidRequestError(
                f"{self.task_id}: min_balance_usd is {min_balance_usd!r} (fix: use dollars, 0 or more)"
            )
        self.items = items
        self.min_balance_usd = min_balance_usd
        self.on_item_error = on_item_error
        self.progress_interval = progress_interval

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: jinja2.Environment | None = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        """Airflow's rendering, except for what is rendered per item or is data.

        Airflow renders every template field through this method, on the mapped path too (which goes
        around ``render_template_fields``). ``prompt``, ``system_prompt`` and ``messages`` are left as
        written: :meth:`execute` renders them once per item, with ``item`` and ``index``. ``items``
        given as a list is data and is left as it is; an upstream output or a template string is
        resolved by Airflow, and its values are not rendered either.
        """
        if content is self.items and _is_list(content):
            return content
        if any(content is getattr(self, name) for name in PER_ITEM_FIELDS):
            return content
        return super().render_template(content, context, jinja_env, seen_oids)

    def execute(self, context: Context) -> list[Any]:
        from airflow_o3.batch import run_batch
        from airflow_o3.budget import Spend
        from airflow_o3.hooks.o3mini import O3MiniHook
        from airflow_o3.ratecontrol import RateController

        with _task_failure_on_final_errors():
            items = self._item_list()
            spend = Spend(self.budget)
            hook = O3MiniHook(
                conn_id=self.conn_id,
                retry=self.retry,
                timeout=self.timeout,
                pool_size=self.limits.max_concurrency,
            )
            hook.call_log_level = logging.DEBUG
            control = RateController(
                requests_per_minute=self.limits.requests_per_minute,
                tokens_per_minute=self.limits.tokens_per_minute,
                admit=spend.check if self.budget.limited else None,
                retry=hook.settings.retry,
            )
            hook.rate_control = self._rate_control = control
            calls, failures = self.prepare_items(hook, items, context)
            if self.dry_run_only:
                return self._dry_run(calls, failures)
            if self.min_balance_usd is not None:
                from airflow_o3.billing import check_batch_balance

                bodies = [call.body for call in calls if call is not None]
                self.log.info("Balance checked: %s", check_batch_balance(hook, bodies, self.min_balance_usd))
            self.log.info(
                "Sending %d item(s), up to %d at a time%s",
                len(calls) - len(failures),
                self.limits.max_concurrency,
                f", {len(failures)} refused before sending" if failures else "",
            )
            outcome = run_batch(
                hook,
                calls,
                failures=failures,
                reply=self._item_result,
                limits=self.limits,
                control=control,
                spend=spend,
                cache=self.response_cache(),
                on_item_error=self.on_item_error,
                log=self.log,
                progress_interval=self.progress_interval,
            )
        return self.publish_batch(context, outcome)

    def on_kill(self) -> None:
        """Stop the batch when the task is killed (SIGTERM) or times out: no request starts any more,
        the workers waiting for their turn leave, and ``execute`` ends at once with the task."""
        if self._rate_control is not None:
            self._rate_control.stop()

    def prepare_items(
        self, hook: O3MiniHook, items: Sequence[Any], context: Context
    ) -> tuple[list[PreparedCall | None], dict[int, ItemFailure]]:
        """Render and check every item's request before anything is sent.

        With ``on_item_error="fail"`` the first item whose request cannot be built fails the task
        (nothing has been paid); with ``"continue"`` it is recorded and not sent.
        """
        templates = _ItemTemplates(self, self.get_template_env())
        parameters = self.request_parameters()
        base = dict(context)
        request_id = client_request_id(context)
        calls: list[PreparedCall | None] = []
        failures: dict[int, ItemFailure] = {}
        for index, item in enumerate(items):
            try:
                messages = templates.messages(base, item, index)
                if index == 0 and self.output_format is not None:
                    self.output_format.check(messages)
                calls.append(
                    hook.prepare(
                        messages,
                        model=self.model,
                        client_request_id=f"{request_id}:i{index}"[-128:],
                        **parameters,
                    )
                )
            except Exception as error:
                problem = error if isinstance(error, InvalidRequestError) else _render_error(error)
                if self.on_item_error == "fail":
                    raise InvalidRequestError(f"{self.task_id}: item {index}: {problem}") from error
                failures[index] = ItemFailure(index, InvalidRequestError(f"item {index}: {problem}"))
                calls.append(None)
        return calls, failures

    def _item_result(self, completion: Completion) -> Any:
        values = [reply_value(choice, completion, self.output_format) for choice in completion.choices]
        return values if (self.parameters.get("n") or 1) > 1 else values[0]

    def _item_list(self) -> list[Any]:
        if not _is_list(self.items):
            raise InvalidRequestError(
                f"{self.task_id}: items is a {type(self.items).__name__}, not a list (fix: pass the "
                "upstream task's output, e.g. items=load_rows(), or set render_template_as_native_obj=True "
                "on the DAG so that a template renders to a list)"
            )
        return list(self.items)

    def _dry_run(self, calls: list[PreparedCall | None], failures: dict[int, ItemFailure]) -> list[Any]:
        bodies = [None if call is None else dict(call.body) for call in calls]
        for failure in failures.values():
            self.log.warning("Dry run: %s", failure.error)
        self.log.info("Dry run, nothing sent: %d request body(ies) built and checked", len(bodies))
        return bodies

    def publish_batch(self, context: Context, outcome: BatchOutcome) -> list[Any]:
        """Push ``usage``, ``usage_per_item``, ``errors`` and ``batch``; return the results in order."""
        from airflow_o3.response import usage_over

        completions = [completion for completion in outcome.completions if completion is not None]
        usage = usage_over(completions)
        usage["items"] = usage.pop("attempts")
        errors = [outcome.failures[index].record() for index in sorted(outcome.failures)]
        summary = outcome.summary()
        if errors:
            self.log.warning(
                "%d of %d item(s) have no result (XCom 'errors'); the first, item %d: %s",
                len(errors),
                len(outcome.values),
                errors[0]["index"],
                errors[0]["message"],
            )
        if outcome.budget_reached is not None:
            self.log.warning(
                "The budget was reached (%s): stopped with partial results, %s",
                outcome.budget_reached,
                outcome.spend.summary(),
            )
        ti = context["ti"]
        ti.xcom_push(key="usage", value=usage)
        ti.xcom_push(
            key="usage_per_item",
            value=[
                None if completion is None else completion.usage_record()
                for completion in outcome.completions
            ],
        )
        ti.xcom_push(key="errors", value=errors)
        ti.xcom_push(key="batch", value=summary)
        return outcome.values


def _is_rendered(items: Any) -> bool:
    """``items`` is a template string or an upstream output (``XComArg``), which Airflow renders."""
    return isinstance(items, str) or callable(getattr(items, "resolve", None))


def _is_list(value: Any) -> bool:
    return (
        isinstance(value, Iterable)
        and not isinstance(value, str | bytes | Mapping)
        and not _is_rendered(value)
    )


def _render_error(error: Exception) -> InvalidRequestError:
    return InvalidRequestError(
        f"the template does not render for this item ({type(error).__name__}: {error}) (fix: check the "
        "keys the template reads from item)"
    )


class _ItemTemplates:
    """The per-item fields of an operator, compiled once and rendered for each item.

    Every string in ``prompt``, ``system_prompt`` and ``messages`` is a template, as Airflow renders
    them; a file path (one word ending in one of the operator's ``template_ext``, the rule of
    :func:`~airflow_o3.operators.o3mini.names_template_file`) is loaded from the DAG's folder.
    """

    def __init__(self, operator: O3MiniBatchOperator, env: jinja2.Environment) -> None:
        self._env = env
        self._ext = tuple(operator.template_ext)
        self.prompt = self._compile(operator.prompt)
        self.system_prompt = self._compile(operator.system_prompt)
        self.message_list = self._compile(operator.messages)

    def _compile(self, value: Any) -> Any:
        if isinstance(value, str):
            if names_template_file(value, self._ext):
                return self._env.get_template(value)
            return self._env.from_string(value)
        if isinstance(value, list):
            return [self._compile(element) for element in value]
        if isinstance(value, dict):
            return {key: self._compile(element) for key, element in value.items()}
        return value

    def _render(self, compiled: Any, context: dict[str, Any]) -> Any:
        import jinja2

        if isinstance(compiled, jinja2.Template):
            rendered = compiled.render(context)
            return rendered if isinstance(rendered, str) else str(rendered)
        if isinstance(compiled, list):
            return [self._render(element, context) for element in compiled]
        if isinstance(compiled, dict):
            return {key: self._render(element, context) for key, element in compiled.items()}
        return compiled

    def fields(self, base: dict[str, Any], item: Any, index: int) -> tuple[Any, Any, Any]:
        """``prompt``, ``system_prompt`` and ``messages`` rendered for one item."""
        context = {**base, "item": item, "index": index}
        return (
            self._render(self.prompt, context),
            self._render(self.system_prompt, context),
            self._render(self.message_list, context),
        )

    def messages(self, base: dict[str, Any], item: Any, index: int) -> list[dict[str, Any]]:
        """The conversation sent for one item; an empty rendered prompt is refused."""
        prompt, system_prompt, message_list = self.fields(base, item, index)
        if message_list is not None:
            messages = [dict(message) for message in message_list]
        else:
            messages = [{"role": "developer", "content": system_prompt}] if system_prompt is not None else []
            messages.append({"role": "user", "content": prompt})
        for position, message in enumerate(messages):
            content = message.get("content")
            if isinstance(content, str) and not content.strip() and message.get("role") != "assistant":
                field = (
                    f"messages[{position}].content"
                    if message_list is not None
                    else ("system_prompt" if message["role"] == "developer" else "prompt")
                )
                raise InvalidRequestError(
                    f"the rendered {field} is empty (fix: check the template and the item's values)"
                )
        return messages

"""The batch operator: one task asks o3-mini once per item of a list, concurrently, in input order.

Dynamic task mapping costs a task instance per row (tens of milliseconds each in ``dag.test()``,
seconds each under a scheduler) and fills the grid view; this operator sends thousands of calls from
one task. It renders one :class:`~airflow_o3.call.O3Call` per item and hands the prepared calls to
:class:`~airflow_o3.batch.BatchRun`. Imported at DAG parse: nothing heavy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, cast

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_o3.batch import ITEM_ERROR_POLICIES, BatchLimits, ItemFailure
from airflow_o3.budget import Budget
from airflow_o3.call import (
    PROMPT_FIELDS,
    O3Call,
    PromptOperator,
    as_written,
    client_request_id,
    connection_hook,
    response_cache,
    take_renamed,
    task_failure_on_final_errors,
    unwrapped,
)
from airflow_o3.errors import InvalidRequestError
from airflow_o3.parameters import coerce_settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_o3.batch import BatchOutcome, ItemErrorPolicy
    from airflow_o3.cache import CacheSettings
    from airflow_o3.hooks.o3mini import O3MiniHook, PreparedCall
    from airflow_o3.ratecontrol import RateController
    from airflow_o3.retry import RequestRetry


class O3MiniBatchOperator(PromptOperator, BaseOperator):
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
    rendered ``items`` and ``model``; ``render_only=True`` logs and returns every item's exact request.

    The batch runs in the worker; it takes no ``stream``, ``json_retries`` or ``deferrable``. The
    arguments it shares with :class:`O3MiniOperator` (``conn_id``, ``model``, ``reasoning_effort``,
    ``max_completion_tokens``, ``response_format``, ``parameters``, ``request_retry``,
    ``read_timeout``, ``fallback_conn_ids``, ``render_only``) mean the same there.

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
        **PromptOperator.template_fields_renderers,
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
        conn_id: str = "aimlapi_default",
        model: str | None = None,
        reasoning_effort: str | None = None,
        max_completion_tokens: int | None = None,
        response_format: dict[str, Any] | type | str | None = None,
        parameters: dict[str, Any] | None = None,
        request_retry: RequestRetry | dict[str, Any] | None = None,
        read_timeout: float | None = None,
        fallback_conn_ids: Sequence[str] = (),
        cache: CacheSettings | dict[str, Any] | str | bool | None = None,
        render_only: bool = False,
        limits: BatchLimits | Mapping[str, Any] | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
        on_item_error: ItemErrorPolicy = "fail",
        min_balance_usd: float | None = None,
        progress_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        renamed = take_renamed(kwargs, type(self).__name__)
        call = O3Call.from_arguments(locals(), kwargs)
        super().__init__(**kwargs)
        self.call = call
        try:
            self.limits = coerce_settings(BatchLimits, limits, "limits")
            self.budget = coerce_settings(Budget, budget, "budget")
        except InvalidRequestError as error:
            raise InvalidRequestError(f"{self.task_id}: {error}") from None
        policy_known = on_item_error in ITEM_ERROR_POLICIES
        for name, value, fine, fix in (
            ("on_item_error", on_item_error, policy_known, "use 'fail' or 'continue'"),
            ("progress_interval", progress_interval, progress_interval > 0, "use seconds above 0"),
            ("min_balance_usd", min_balance_usd, _no_or_dollars(min_balance_usd), "use dollars, 0 or more"),
        ):
            if not fine:
                raise InvalidRequestError(f"{self.task_id}: {name} is {value!r} (fix: {fix})")
        self.items = as_written(items) if _is_list(items) else items
        self.prompt = as_written(prompt)
        self.system_prompt = as_written(system_prompt)
        self.messages = as_written(messages)
        self.conn_id = conn_id
        self.model = model
        self.response_format = response_format
        self.request_retry = renamed.get("request_retry", request_retry)
        self.read_timeout = renamed.get("read_timeout", read_timeout)
        self.fallback_conn_ids = tuple(fallback_conn_ids)
        self.cache = cache
        self.render_only = renamed.get("render_only", render_only)
        self.min_balance_usd = min_balance_usd
        self.on_item_error = on_item_error
        self.progress_interval = progress_interval

    def request(self) -> O3Call:
        """The call with the per-item templates as written, to be rendered for each item."""
        fields = {name: unwrapped(getattr(self, name)) for name in PROMPT_FIELDS}
        return replace(self.call, model=self.model, **fields)

    def execute(self, context: Context) -> list[Any]:
        """Render and check every item's request, send them, push the batch's XComs; return the
        results in order."""
        from airflow_o3.batch import BatchRun
        from airflow_o3.budget import Spend
        from airflow_o3.ratecontrol import RateController

        call = self.request()
        with task_failure_on_final_errors():
            items = self._item_list()
            spend = Spend(self.budget)
            hook = connection_hook(self, pool_size=self.limits.max_concurrency)
            hook.call_log_level = logging.DEBUG
            control = RateController(
                requests_per_minute=self.limits.requests_per_minute,
                tokens_per_minute=self.limits.tokens_per_minute,
                admit=spend.check if self.budget.limited else None,
                retry=hook.settings.retry,
            )
            hook.rate_control = self._rate_control = control
            calls, failures = self.prepare_items(call, hook, items, context)
            if self.render_only:
                return self._render_only(calls, failures)
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
            outcome = BatchRun(
                hook,
                calls,
                failures=failures,
                reply=call.result,
                limits=self.limits,
                control=control,
                spend=spend,
                cache=response_cache(self.cache),
                on_item_error=self.on_item_error,
                log=self.log,
                progress_interval=self.progress_interval,
            ).run()
        return self.publish_batch(context, outcome)

    def on_kill(self) -> None:
        """Stop the batch when the task is killed (SIGTERM) or times out: no request starts any more,
        the workers waiting for their turn leave, and ``execute`` ends at once with the task."""
        if self._rate_control is not None:
            self._rate_control.stop()

    def prepare_items(
        self, call: O3Call, hook: O3MiniHook, items: Sequence[Any], context: Context
    ) -> tuple[list[PreparedCall | None], dict[int, ItemFailure]]:
        """Render and check every item's request before anything is sent.

        Each item renders the call's templates through Airflow's ``render_template`` with ``item``
        and ``index`` added to the context. With ``on_item_error="fail"`` the first item whose
        request cannot be built fails the task (nothing has been paid); with ``"continue"`` it is
        recorded and not sent.
        """
        env = self.get_template_env()
        base = dict(context)
        request_id = client_request_id(context)
        calls: list[PreparedCall | None] = []
        failures: dict[int, ItemFailure] = {}
        for index, item in enumerate(items):
            item_context = cast("Context", {**base, "item": item, "index": index})
            try:
                messages = call.conversation(
                    partial(self.render_template, context=item_context, jinja_env=env)
                )
                calls.append(call.prepare(hook, messages, f"{request_id}:i{index}"[-128:]))
            except Exception as error:
                problem = error if isinstance(error, InvalidRequestError) else _render_error(error)
                if self.on_item_error == "fail":
                    raise InvalidRequestError(f"{self.task_id}: item {index}: {problem}") from error
                failures[index] = ItemFailure(index, InvalidRequestError(f"item {index}: {problem}"))
                calls.append(None)
        return calls, failures

    def _item_list(self) -> list[Any]:
        items = unwrapped(self.items)
        if not _is_list(items):
            raise InvalidRequestError(
                f"{self.task_id}: items is a {type(items).__name__}, not a list (fix: pass the "
                "upstream task's output, e.g. items=load_rows(), or set render_template_as_native_obj=True "
                "on the DAG so that a template renders to a list)"
            )
        return list(items)

    def _render_only(self, calls: list[PreparedCall | None], failures: dict[int, ItemFailure]) -> list[Any]:
        bodies = [None if call is None else dict(call.body) for call in calls]
        for failure in failures.values():
            self.log.warning("Render only: %s", failure.error)
        self.log.info("Render only, nothing sent: %d request body(ies) built and checked", len(bodies))
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


def _no_or_dollars(value: Any) -> bool:
    return value is None or (not isinstance(value, bool) and isinstance(value, int | float) and not value < 0)


def _is_list(value: Any) -> bool:
    """A list of items: not a template string or an upstream output (``XComArg``), which Airflow renders."""
    return (
        isinstance(value, Iterable)
        and not isinstance(value, str | bytes | Mapping)
        and not callable(getattr(value, "resolve", None))
    )


def _render_error(error: Exception) -> InvalidRequestError:
    return InvalidRequestError(
        f"the template does not render for this item ({type(error).__name__}: {error}) (fix: check the "
        "keys the template reads from item)"
    )

"""What a call leaves behind for the people who run it: one log line, and Airflow metrics.

Every call through :meth:`O3MiniHook.send` (sync, streamed, cached) ends with one summary line in the
task log, in ``key=value`` form so it can be grepped and parsed::

    o3-mini call: model=o3-mini-2025-01-31 latency_s=2.410 tokens_in=812 tokens_in_cached=0
    tokens_out=1530 tokens_reasoning=1216 cost_usd=0.009912 from_cache=false finish_reason=stop
    request_id=req-7f3a client_request_id=daily_report:write_report:scheduled__2026-01-01T00_00_00_00_00:t1

and sends these metrics through Airflow's ``Stats`` (StatsD or OpenTelemetry, as the deployment's
``[metrics]`` section configures; nothing is sent when metrics are off), each tagged with the model:

========================================  ======================================================
``airflow_o3.calls``                      counter: calls answered by the service
``airflow_o3.cache_hits``                 counter: calls answered from the response cache
``airflow_o3.tokens.prompt``              counter: input tokens
``airflow_o3.tokens.cached``              counter: input tokens the service served from its cache
``airflow_o3.tokens.completion``          counter: output tokens, hidden reasoning included
``airflow_o3.tokens.reasoning``           counter: hidden reasoning tokens
``airflow_o3.cost_usd``                   gauge: the service's cost figure for the last call
``airflow_o3.cost_microusd``              counter: the same in millionths of a dollar, to add up
``airflow_o3.latency``                    timer: wall time of a call, retries and waits included
``airflow_o3.errors.<kind>``              counter: calls that failed, by kind (``rate_limited``,
                                          ``server``, ``authentication``, ``request_timeout``, ...)
``airflow_o3.retries``                    counter: attempts that failed and were retried
========================================  ======================================================

Cache hits cost nothing and add no tokens; their line says ``from_cache=true cost_usd=0``.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from airflow.providers.common.compat.sdk import Stats

from airflow_o3.response import amount

if TYPE_CHECKING:
    from airflow_o3.response import Completion

PREFIX = "airflow_o3"
P = ParamSpec("P")

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class _Prepared(Protocol):
    """What the observer reads from a prepared call (the hook's ``PreparedCall``)."""

    @property
    def body(self) -> Mapping[str, Any]: ...

    @property
    def client_request_id(self) -> str | None: ...


class _InfoLog(Protocol):
    """The part of a logger used here: stdlib (Airflow 2) and structlog (Airflow 3) both fit."""

    def log(self, level: int, event: str, /, *args: Any, **kwargs: Any) -> Any: ...


class _Logs(Protocol):
    """Anything with a ``log`` (every hook and operator)."""

    @property
    def log(self) -> _InfoLog: ...


H = TypeVar("H", bound=_Logs)
R = TypeVar("R", bound=_Prepared)


def error_kind(error: BaseException) -> str:
    """The metric suffix for an error: ``RateLimitedError`` -> ``rate_limited``."""
    name = type(error).__name__.removesuffix("Error") or type(error).__name__
    return _CAMEL.sub("_", name).lower()


def _tokens(usage: Mapping[str, Any], *path: str) -> int | None:
    """A token count of the usage, or ``None`` when it is missing or no count (NaN, negative...)."""
    node: Any = usage
    for name in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(name)
    count = amount(node)
    return None if count is None else int(count)


_TOKEN_PATHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prompt", ("prompt_tokens",)),
    ("cached", ("prompt_tokens_details", "cached_tokens")),
    ("completion", ("completion_tokens",)),
    ("reasoning", ("completion_tokens_details", "reasoning_tokens")),
)
"""Each token figure of a call: its metric suffix, and its place in the usage object."""


def _token_counts(completion: Completion) -> dict[str, int | None]:
    """The call's token figures by metric suffix, read once for its line and its metrics."""
    usage = completion.usage
    return {metric: _tokens(usage, *path) for metric, path in _TOKEN_PATHS}


def _cost(completion: Completion) -> float | None:
    """The call's cost figure, or ``None`` when it sent none or one that is no amount."""
    cost = amount(completion.cost_usd)
    return None if cost is None else float(cost)


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def summary_line(completion: Completion, *, latency: float, client_request_id: str | None) -> str:
    """The one log line that describes a call (see the module docstring for its fields)."""
    return _line(completion, _token_counts(completion), _cost(completion), latency, client_request_id)


def _line(
    completion: Completion,
    tokens: Mapping[str, int | None],
    figure: float | None,
    latency: float,
    client_request_id: str | None,
) -> str:
    if completion.from_cache:
        cost = "0"
    elif figure is not None:
        cost = f"{figure:.6f}"
    else:
        cost = "unreported"
    return (
        f"o3-mini call: model={_text(completion.model)} latency_s={latency:.3f} "
        f"tokens_in={_text(tokens['prompt'])} tokens_in_cached={_text(tokens['cached'])} "
        f"tokens_out={_text(tokens['completion'])} tokens_reasoning={_text(tokens['reasoning'])} "
        f"cost_usd={cost} from_cache={'true' if completion.from_cache else 'false'} "
        f"finish_reason={_text(completion.finish_reason)} request_id={_text(completion.request_id)} "
        f"client_request_id={_text(client_request_id)}"
    )


def record_completion(completion: Completion, *, latency: float, tags: Mapping[str, str]) -> None:
    """Send the metrics of a finished call."""
    _send_metrics(completion, _token_counts(completion), _cost(completion), latency, dict(tags))


def _send_metrics(
    completion: Completion,
    tokens: Mapping[str, int | None],
    cost: float | None,
    latency: float,
    tags: dict[str, str],
) -> None:
    if completion.from_cache:
        Stats.incr(f"{PREFIX}.cache_hits", tags=tags)
        return
    Stats.incr(f"{PREFIX}.calls", tags=tags)
    Stats.timing(f"{PREFIX}.latency", timedelta(seconds=latency), tags=tags)
    for metric, count in tokens.items():
        if count:
            Stats.incr(f"{PREFIX}.tokens.{metric}", count, tags=tags)
    if cost is not None:
        Stats.gauge(f"{PREFIX}.cost_usd", cost, tags=tags)
        Stats.incr(f"{PREFIX}.cost_microusd", round(cost * 1_000_000), tags=tags)


def record_error(error: BaseException, *, tags: Mapping[str, str] | None = None) -> None:
    """Count a failed call as ``airflow_o3.errors.<kind>``."""
    Stats.incr(f"{PREFIX}.errors.{error_kind(error)}", tags=dict(tags or {}))


def record_retry() -> None:
    """Count an attempt that failed and is retried."""
    Stats.incr(f"{PREFIX}.retries")


def report_call(owner: _Logs, prepared: _Prepared, completion: Completion, started: float) -> None:
    """Log a finished call's summary line and send its metrics; ``started`` is its ``time.monotonic()``.

    :func:`observed` does this for a hook's send method; call it for a reply obtained another way
    (a deferred task's cache hit)."""
    latency = time.monotonic() - started
    tokens, cost = _token_counts(completion), _cost(completion)  # read once, for the line and the metrics
    line = _line(completion, tokens, cost, latency, prepared.client_request_id)
    owner.log.log(getattr(owner, "call_log_level", logging.INFO), line)  # a batch: DEBUG, and progress lines
    _send_metrics(completion, tokens, cost, latency, {"model": completion.model or _model(prepared)})


def _model(prepared: _Prepared) -> str:
    return str(prepared.body.get("model", ""))


def observed(
    send: Callable[Concatenate[H, R, P], Completion],
) -> Callable[Concatenate[H, R, P], Completion]:
    """Wrap a hook's send method: time it, log its summary line, send its metrics, count its errors."""

    @functools.wraps(send)
    def wrapper(owner: H, prepared: R, /, *args: P.args, **kwargs: P.kwargs) -> Completion:
        started = time.monotonic()
        try:
            completion = send(owner, prepared, *args, **kwargs)
        except Exception as error:
            record_error(error, tags={"model": _model(prepared)})
            raise
        report_call(owner, prepared, completion, started)
        return completion

    return wrapper


def observed_async(
    send: Callable[Concatenate[H, R, P], Awaitable[Completion]],
) -> Callable[Concatenate[H, R, P], Awaitable[Completion]]:
    """:func:`observed` for an ``async`` send method (the triggerer's path)."""

    @functools.wraps(send)
    async def wrapper(owner: H, prepared: R, /, *args: P.args, **kwargs: P.kwargs) -> Completion:
        started = time.monotonic()
        try:
            completion = await send(owner, prepared, *args, **kwargs)
        except Exception as error:
            record_error(error, tags={"model": _model(prepared)})
            raise
        report_call(owner, prepared, completion, started)
        return completion

    return wrapper

"""What a call leaves behind for the people who run it: one ``key=value`` summary line in the task
log, and Airflow metrics through ``Stats`` tagged with the model. docs/observability.md lists the
line's fields and the metrics; a cache hit counts only ``airflow_o3.cache_hits`` and says
``from_cache=true cost_usd=0``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import Stats

from airflow_o3.response import amount

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_o3.hooks.o3mini import O3MiniHook, PreparedCall
    from airflow_o3.response import Completion

PREFIX = "airflow_o3"

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def error_kind(error: BaseException) -> str:
    """The metric suffix for an error: ``RateLimitedError`` -> ``rate_limited``."""
    name = type(error).__name__.removesuffix("Error") or type(error).__name__
    return _CAMEL.sub("_", name).lower()


_TOKEN_PATHS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prompt", ("prompt_tokens",)),
    ("cached", ("prompt_tokens_details", "cached_tokens")),
    ("completion", ("completion_tokens",)),
    ("reasoning", ("completion_tokens_details", "reasoning_tokens")),
)
"""Each token figure of a call: its metric suffix, and its place in the usage object."""


def _token_counts(completion: Completion) -> dict[str, int | None]:
    """The call's token figures by metric suffix; ``None`` for one missing or no count (NaN, negative...)."""
    counts: dict[str, int | None] = {}
    for metric, path in _TOKEN_PATHS:
        node: Any = completion.usage
        for name in path:
            node = node.get(name) if isinstance(node, Mapping) else None
        count = amount(node)
        counts[metric] = None if count is None else int(count)
    return counts


def _cost(completion: Completion) -> float | None:
    """The call's cost figure, or ``None`` when it sent none or one that is no amount."""
    cost = amount(completion.cost_usd)
    return None if cost is None else float(cost)


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def summary_line(completion: Completion, *, latency: float, client_request_id: str | None) -> str:
    """The one log line that describes a call (its fields: docs/observability.md)."""
    tokens, figure = _token_counts(completion), _cost(completion)
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
    labels = dict(tags)
    if completion.from_cache:
        Stats.incr(f"{PREFIX}.cache_hits", tags=labels)
        return
    Stats.incr(f"{PREFIX}.calls", tags=labels)
    Stats.timing(f"{PREFIX}.latency", timedelta(seconds=latency), tags=labels)
    cost = _cost(completion)
    for metric, count in _token_counts(completion).items():
        if count:
            Stats.incr(f"{PREFIX}.tokens.{metric}", count, tags=labels)
    if cost is not None:
        Stats.gauge(f"{PREFIX}.cost_usd", cost, tags=labels)
        Stats.incr(f"{PREFIX}.cost_microusd", round(cost * 1_000_000), tags=labels)


def record_error(error: BaseException, *, tags: Mapping[str, str] | None = None) -> None:
    """Count a failed call as ``airflow_o3.errors.<kind>``."""
    Stats.incr(f"{PREFIX}.errors.{error_kind(error)}", tags=dict(tags or {}))


def record_retry() -> None:
    """Count an attempt that failed and is retried."""
    Stats.incr(f"{PREFIX}.retries")


@contextlib.contextmanager
def reported(owner: O3MiniHook, prepared: PreparedCall) -> Iterator[Callable[[Completion], Completion]]:
    """Time a hook's call: an error raised in the block is counted; the function it yields logs the
    summary line of the completion it is given (at the hook's ``call_log_level``) and sends its
    metrics, so every reply the call returns goes through it."""
    started = time.monotonic()

    def report(completion: Completion) -> Completion:
        latency = time.monotonic() - started
        line = summary_line(completion, latency=latency, client_request_id=prepared.client_request_id)
        owner.log.log(owner.call_log_level, line)  # a batch: DEBUG, and progress lines
        record_completion(completion, latency=latency, tags={"model": completion.model or _model(prepared)})
        return completion

    try:
        yield report
    except Exception as error:
        record_error(error, tags={"model": _model(prepared)})
        raise


def _model(prepared: PreparedCall) -> str:
    return str(prepared.body.get("model", ""))

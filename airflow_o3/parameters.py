"""Names of the request parameters and the settings dicts, light enough to check at DAG parse time."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_o3.errors import InvalidRequestError

SettingsT = TypeVar("SettingsT")

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

REJECTED_PARAMETERS: Mapping[str, str] = {
    "temperature": "reasoning models sample at a fixed temperature; remove it",
    "top_p": "reasoning models sample at a fixed temperature; remove it",
    "presence_penalty": "reasoning models take no penalties; remove it",
    "frequency_penalty": "reasoning models take no penalties; remove it",
    "logprobs": "reasoning models return no log probabilities; remove it",
    "top_logprobs": "reasoning models return no log probabilities; remove it",
    "logit_bias": "reasoning models take no logit bias; remove it",
    "max_tokens": "use max_completion_tokens instead: it bounds hidden reasoning plus the visible reply",
    "parallel_tool_calls": "reasoning models do not take it; remove it",
}
"""Parameters of other OpenAI chat models that o3-mini refuses, with what to do instead."""

CONTRACT_PARAMETERS: frozenset[str] = frozenset(
    {
        "max_completion_tokens",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "n",
        "stop",
        "seed",
        "reasoning_effort",
        "response_format",
        "provider",
    }
)
"""Every optional request parameter the contract lets o3-mini take."""


def check_parameter_names(names: Iterable[str]) -> None:
    """Refuse parameters o3-mini rejects and names the contract does not know.

    :raises InvalidRequestError: naming each such parameter and what to do instead.
    """
    problems = []
    for name in names:
        if name in REJECTED_PARAMETERS:
            problems.append(f"{name}: o3-mini refuses this parameter ({REJECTED_PARAMETERS[name]})")
        elif name not in CONTRACT_PARAMETERS:
            problems.append(
                f"{name}: unknown parameter (fix: use one of {', '.join(sorted(CONTRACT_PARAMETERS))})"
            )
    if problems:
        raise InvalidRequestError("Request refused before sending: " + "; ".join(problems))


def coerce_settings(
    cls: type[SettingsT], value: SettingsT | Mapping[str, Any] | None, what: str
) -> SettingsT:
    """Settings from what a DAG author wrote: ``None`` (the defaults), a dict, or the settings themselves.

    :param what: the argument's name as the DAG author knows it, e.g. ``budget``.
    :raises InvalidRequestError: a key the settings do not have, naming the keys they do.
    """
    if isinstance(value, cls):
        return value
    if value is None:
        return cls()
    known = [field.name for field in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(value) - set(known))  # type: ignore[arg-type]
    if unknown:
        raise InvalidRequestError(
            f"{what} has unknown key(s) {', '.join(unknown)} (fix: use the keys {', '.join(known)})"
        )
    return cls(**value)  # type: ignore[arg-type]

"""Names and plain values of the request parameters, and the settings dicts: light enough to check at
DAG parse time (nothing here imports pydantic)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_o3.errors import InvalidRequestError

SettingsT = TypeVar("SettingsT")

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

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

OWN_PARAMETERS = ("reasoning_effort", "max_completion_tokens", "response_format", "stream")
"""Contract parameters that the operator and the render command take as arguments of their own,
never inside ``parameters``."""

REASONING_EFFORTS = ("low", "medium", "high")
MAX_COMPLETION_TOKENS = 100_000
MAX_STOP_SEQUENCES = 4
TOOL_CHOICES = ("none", "auto", "required")


@dataclass(frozen=True)
class ValueRule:
    """What the contract lets one parameter's value be.

    :param accepts: whether a value (never ``None``: that means unset) is allowed.
    :param fix: what to write instead, as a DAG author reads it.
    """

    accepts: Callable[[Any], bool]
    fix: str


def _whole_number(low: int, high: int | None = None) -> Callable[[Any], bool]:
    def accepts(value: Any) -> bool:
        return type(value) is int and value >= low and (high is None or value <= high)

    return accepts


def _stop(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return (
        isinstance(value, list)
        and len(value) <= MAX_STOP_SEQUENCES
        and all(isinstance(item, str) for item in value)
    )


def _tool_choice(value: Any) -> bool:
    if isinstance(value, str):
        return value in TOOL_CHOICES
    if not (isinstance(value, dict) and value.keys() == {"type", "function"} and value["type"] == "function"):
        return False
    function = value["function"]
    return isinstance(function, dict) and function.keys() == {"name"} and isinstance(function["name"], str)


VALUE_RULES: Mapping[str, ValueRule] = {
    "reasoning_effort": ValueRule(lambda value: value in REASONING_EFFORTS, "use 'low', 'medium' or 'high'"),
    "max_completion_tokens": ValueRule(
        _whole_number(1, MAX_COMPLETION_TOKENS),
        f"use a whole number from 1 to {MAX_COMPLETION_TOKENS}; it covers hidden reasoning plus the "
        "visible reply",
    ),
    "n": ValueRule(_whole_number(1), "use a whole number of 1 or more"),
    "seed": ValueRule(_whole_number(1), "use a whole number of 1 or more"),
    "stop": ValueRule(_stop, f"use a string or a list of at most {MAX_STOP_SEQUENCES} strings"),
    "tool_choice": ValueRule(
        _tool_choice, "use 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}"
    ),
    "provider": ValueRule(
        lambda value: isinstance(value, str), "name an upstream such as 'openai', or 'auto'"
    ),
}
"""The parameters whose values are plain literals, and what the contract allows for each: the one
place these rules are written. The operator checks literal values with them when the DAG is parsed,
and the request builder with them before its pydantic check of the whole body."""


def parameter_name_problem(name: str) -> str | None:
    """What is wrong with sending a parameter of this name, if anything: o3-mini refuses it, or the
    contract does not know it."""
    if name in REJECTED_PARAMETERS:
        return f"{name}: o3-mini refuses this parameter ({REJECTED_PARAMETERS[name]})"
    if name not in CONTRACT_PARAMETERS:
        return f"{name}: unknown parameter (fix: use one of {', '.join(sorted(CONTRACT_PARAMETERS))})"
    return None


def check_parameter_names(names: Iterable[str]) -> None:
    """Refuse parameters o3-mini rejects and names the contract does not know.

    :raises InvalidRequestError: naming each such parameter and what to do instead.
    """
    problems = [problem for name in names if (problem := parameter_name_problem(name))]
    if problems:
        raise InvalidRequestError("Request refused before sending: " + "; ".join(problems))


def parameter_value_problems(values: Mapping[str, Any], label: str = "{name}") -> list[str]:
    """One line per value outside the contract, each naming the parameter, the value and the fix.

    :param values: parameter name to value; ``None`` (unset) and names without a rule are skipped.
    :param label: how to name a parameter in the message, e.g. ``"parameters['{name}']"``.
    """
    problems = []
    for name, value in values.items():
        rule = VALUE_RULES.get(name)
        if rule is not None and value is not None and not rule.accepts(value):
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            problems.append(f"{label.format(name=name)}: got {shown} (fix: {rule.fix})")
    return problems


def check_parameter_values(values: Mapping[str, Any]) -> None:
    """Refuse literal parameter values the contract does not allow, before anything is sent.

    :raises InvalidRequestError: naming each parameter, its value and the fix.
    """
    problems = parameter_value_problems(values)
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

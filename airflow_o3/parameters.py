"""Names and plain values of the request parameters, and the settings dicts: light enough to check at
DAG parse time. The names come from the contract (:mod:`airflow_o3.contract`); a value is checked
against the contract's schema for that parameter, compiled on the first check."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_o3.contract import REFUSED, request_schema
from airflow_o3.errors import InvalidRequestError

SettingsT = TypeVar("SettingsT")

if TYPE_CHECKING:
    from collections.abc import Mapping

CONTRACT_PARAMETERS: frozenset[str] = (
    frozenset(request_schema()["properties"]) - {"model", "messages"} - REFUSED.keys()
)
"""Every optional request parameter the contract lets o3-mini take: the document's, less those it refuses."""

OWN_PARAMETERS = ("reasoning_effort", "max_completion_tokens", "response_format", "stream")
"""Contract parameters that the operator and the render command take as arguments of their own,
never inside ``parameters``."""

REASONING_EFFORTS: tuple[str, ...] = tuple(request_schema()["properties"]["reasoning_effort"]["enum"])


def parameter_name_problem(name: str) -> str | None:
    """What is wrong with sending a parameter of this name, if anything: o3-mini refuses it, or the
    contract does not know it."""
    if name in REFUSED:
        return f"{name}: o3-mini refuses this parameter ({REFUSED[name]})"
    if name not in CONTRACT_PARAMETERS:
        return f"{name}: unknown parameter (fix: use one of {', '.join(sorted(CONTRACT_PARAMETERS))})"
    return None


def parameter_value_problems(values: Mapping[str, Any], label: str = "{name}") -> list[str]:
    """One line per value outside the contract, each naming the parameter, the value and the fix.

    :param values: parameter name to value; ``None`` (unset) and names the contract does not list
        are skipped.
    :param label: how to name a parameter in the message, e.g. ``"parameters['{name}']"``.
    """
    from airflow_o3.request import value_problems  # the compiled contract, only once there is a value

    problems = []
    for name, value in values.items():
        found = [] if value is None else value_problems(name, value, label.format(name=name))
        if found:
            fixes = "".join(f" (fix: {fix})" for fix in dict.fromkeys(p.fix for p in found if p.fix))
            problems.append("; ".join(dict.fromkeys(problem.text for problem in found)) + fixes)
    return problems


def misvalued(name: str, value: Any, fix: str) -> str:
    """``name: got <value> (fix: ...)``, the value cut to 80 characters."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return f"{name}: got {shown} (fix: {fix})"


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

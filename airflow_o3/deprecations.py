"""Old names kept working for one release, with a warning that says what to write instead."""

from __future__ import annotations

import warnings
from typing import TypeVar

T = TypeVar("T")

REMOVED_IN = "0.4.0"
"""The release in which the old names stop working."""


class O3DeprecationWarning(DeprecationWarning):
    """An argument, setting or class of airflow-o3 was renamed; the old name goes in :data:`REMOVED_IN`."""


def warn_renamed(old: str, new: str, where: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` (an argument, setting or class of ``where``) is now called ``new``.

    :param where: what the name belongs to, for the message (``"O3MiniOperator"``, ``"connection extra"``).
    :param stacklevel: as for :func:`warnings.warn`; the default points at the caller's caller.
    """
    warnings.warn(
        f"{where}: {old} is renamed {new}; {old} stops working in airflow-o3 {REMOVED_IN} (fix: write {new})",
        O3DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_argument(value: T, old_value: T | None, old: str, new: str, where: str) -> T:
    """The argument ``new``'s ``value``, else ``old_value`` given under the old name (with a warning)."""
    if old_value is None:
        return value
    warn_renamed(old, new, where, stacklevel=4)
    return old_value if value is None else value

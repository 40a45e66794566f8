"""Old names kept working for one release, with a warning that says what to write instead."""

from __future__ import annotations

import warnings

REMOVED_IN = "0.4.0"
"""The release in which the old names stop working."""


class O3DeprecationWarning(DeprecationWarning):
    """An argument, setting or class of airflow-o3 was renamed; the old name goes in :data:`REMOVED_IN`."""


def warn_renamed(old: str, new: str, where: str) -> None:
    """Warn that ``old`` (an argument, setting or class of ``where``) is now called ``new``.

    :param where: what the name belongs to, for the message (``"O3MiniOperator"``, ``"connection extra"``).
    """
    warnings.warn(
        f"{where}: {old} is renamed {new}; {old} stops working in airflow-o3 {REMOVED_IN} (fix: write {new})",
        O3DeprecationWarning,
        stacklevel=3,
    )

"""Where the response cache and the spend ledger keep their files: a local folder or object storage.

Local files are read and written with plain file calls, atomically and owner-only: Airflow's object
storage layer would load every provider's metadata at the first use, seconds of CPU in a triggerer.
Any other URL (``s3://bucket/prefix``) goes through Airflow's ``ObjectStoragePath``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any


def under_airflow_home(name: str) -> str:
    """``$AIRFLOW_HOME/{name}`` (``~/airflow`` without the variable): one machine's folder."""
    return os.path.join(os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow"), name)


def local_folder(location: str) -> str | None:
    """The folder of a local ``location`` (a path or a ``file://`` URL); ``None`` for object storage."""
    if location.startswith("file://"):
        return location[len("file://") :]
    return None if "://" in location else location


def object_path(location: str) -> Any:
    """Airflow's ``ObjectStoragePath`` of an object-storage URL."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return ObjectStoragePath(location)


def read_text(location: str) -> str:
    """The text of a file: a local one with plain file calls, an object through ``ObjectStoragePath``."""
    local = local_folder(location)
    if local is None:
        return str(object_path(location).read_text())
    with open(local, encoding="utf-8") as file:
        return file.read()


def write_text(location: str, text: str) -> None:
    """Write a file atomically: a local one owner-only (see :func:`write_local`), an object in one put."""
    local = local_folder(location)
    if local is not None:
        write_local(local, text)
        return
    path = object_path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_local(path: str, data: str) -> None:
    """Write ``data`` to ``path`` atomically, owner-only: folders 0700, the file 0600, whatever the umask."""
    folder = os.path.dirname(path)
    _make_private_folders(folder)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(data)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def why(error: Exception) -> str:
    """An error in a few words for a warning: its type and message, at most 300 characters."""
    return f"{type(error).__name__}: {error}"[:300]


def _make_private_folders(folder: str) -> None:
    """Create ``folder`` and its missing parents with mode 0700 (``os.makedirs`` applies the umask)."""
    if not folder or os.path.isdir(folder):
        return
    _make_private_folders(os.path.dirname(folder))
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:  # made meanwhile by a concurrent writer
        if not os.path.isdir(folder):
            raise
    else:
        os.chmod(folder, 0o700)

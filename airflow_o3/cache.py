"""Never pay twice: a response cache keyed by the exact request.

When a task's call succeeded but the task still failed (the worker died after the reply arrived, a
later step raised), Airflow's retry of the task finds the stored reply and does not call again.
Entries live under an ``ObjectStoragePath``: a local folder by default, or any fsspec URL such as
``s3://bucket/o3-cache`` when workers are spread over machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_o3.errors import InvalidRequestError
from airflow_o3.parameters import coerce_settings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_o3.response import Completion

CacheMode = Literal["off", "on", "read_only"]
CACHE_MODES: tuple[str, ...] = ("off", "on", "read_only")
ENTRY_VERSION = 1


def default_cache_root() -> str:
    """``$AIRFLOW_HOME/o3_cache``: fine for one machine; use shared storage for several workers."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return os.path.join(home, "o3_cache")


@dataclass(frozen=True)
class CacheSettings:
    """Whether and where replies are cached.

    :param mode: ``off`` (no cache), ``on`` (read stored replies, store new ones) or ``read_only``
        (reuse stored replies, store nothing).
    :param path: a folder or fsspec URL (``s3://bucket/prefix``); defaults to ``$AIRFLOW_HOME/o3_cache``.
    """

    mode: CacheMode = "off"
    path: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in CACHE_MODES:
            raise InvalidRequestError(
                f"cache mode {self.mode!r} is not known (fix: use one of {', '.join(CACHE_MODES)})"
            )

    @classmethod
    def coerce(cls, value: CacheSettings | Mapping[str, Any] | str | bool | None) -> CacheSettings:
        """Settings from what a DAG author may write: ``True``, ``"read_only"``, a dict, or settings."""
        if value is False:
            return cls()
        if value is True:
            return cls(mode="on")
        if isinstance(value, str):
            return cls(mode=value)  # type: ignore[arg-type]
        return coerce_settings(cls, value, "cache")


def cache_key(base_url: str, body: Mapping[str, Any]) -> str:
    """A digest of the canonical request: the base URL and the body with sorted keys."""
    canonical = json.dumps(
        {"base_url": base_url, "body": body}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """Stored replies, one JSON file per request digest.

    :param settings: the mode and the place of the cache.
    """

    def __init__(self, settings: CacheSettings) -> None:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        self.settings = settings
        self.root = ObjectStoragePath(settings.path or default_cache_root())

    @property
    def enabled(self) -> bool:
        return self.settings.mode != "off"

    def _entry(self, key: str) -> Any:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        """The stored completion for a request, or ``None``; an unreadable entry counts as missing."""
        from airflow_o3.response import completion_from_body

        if not self.enabled:
            return None
        entry = self._entry(key)
        try:
            data = json.loads(entry.read_text())
            if data.get("version") != ENTRY_VERSION:
                return None
            return completion_from_body(data["response"], data["headers"], from_cache=True)
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, completion: Completion) -> None:
        """Store a completion (not in ``read_only`` mode); a crash mid-write leaves no half entry."""
        if self.settings.mode != "on":
            return
        from airflow_o3.response import record_headers

        data = json.dumps(
            {
                "version": ENTRY_VERSION,
                "key": key,
                "response": dict(completion.raw),
                "headers": record_headers(completion),
            },
            ensure_ascii=False,
        )
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        if entry.protocol in ("file", "local", ""):
            temporary = entry.parent / f".{entry.name}.{uuid.uuid4().hex}.tmp"
            temporary.write_text(data)
            os.replace(temporary.path, entry.path)
        else:
            entry.write_text(data)

"""Never pay twice: a response cache keyed by the connection and the exact request.

What it covers, where entries live and how it fails safe: docs/reliability.md ("The response cache").
It never raises: the reply was paid for, and failing the task would only make Airflow retry it and
pay again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from airflow_o3.errors import ConfigurationError
from airflow_o3.parameters import coerce_settings
from airflow_o3.storage import local_folder, object_path, read_text, under_airflow_home, why, write_text
from airflow_o3.structured import not_json

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_o3.response import Completion

log = logging.getLogger(__name__)

CacheMode = Literal["off", "on", "read_only"]
CACHE_MODES: tuple[str, ...] = get_args(CacheMode)
ENTRY_VERSION = 2
"""Bumped when the key changed to include the connection: entries of version 1 are never read."""
_FINGERPRINT_LABEL = b"airflow-o3 connection fingerprint v1"


@dataclass(frozen=True)
class CacheSettings:
    """Whether and where replies are cached.

    :param mode: ``off`` (no cache), ``on`` (read stored replies, store new ones) or ``read_only``
        (reuse stored replies, store nothing).
    :param path: a folder or fsspec URL (``s3://bucket/prefix``); defaults to ``$AIRFLOW_HOME/o3_cache``.
    :param grace_period: with ``deferrable=True`` and the cache ``on``: seconds a trigger that is
        cancelled (the triggerer stops, or moves the trigger) while its request is in flight keeps
        waiting for the reply, to store it so that the trigger's next run does not pay again.
    """

    mode: CacheMode = "off"
    path: str | None = None
    grace_period: float = 15.0

    def __post_init__(self) -> None:
        if self.mode not in CACHE_MODES:
            raise ConfigurationError(
                f"cache mode {self.mode!r} is not known (fix: use one of {', '.join(CACHE_MODES)})"
            )
        seconds = self.grace_period
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 600:
            raise ConfigurationError(
                f"cache grace_period {seconds!r} is no number of seconds from 0 to 600 (fix: use e.g. 15)"
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


def connection_fingerprint(base_url: str, api_key: str) -> str:
    """Who pays for a reply: an HMAC of the base URL under the API key.

    Two connections share entries only when both their base URL and their key are the same. The key
    cannot be recovered from the fingerprint, so it may be stored and passed around (in a trigger's
    arguments, say).
    """
    message = _FINGERPRINT_LABEL + b"\0" + base_url.rstrip("/").encode()
    return hmac.new(api_key.encode(), message, hashlib.sha256).hexdigest()


def cache_key(fingerprint: str, body: Mapping[str, Any]) -> str:
    """The entry of a request: a digest of the connection's fingerprint and the body with sorted keys."""
    canonical = json.dumps(
        {"connection": fingerprint, "body": body}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _finite(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"the entry holds the number {value[:40]}, too large for a reply")
    return number


class ResponseCache:
    """Stored replies, one JSON file per request digest.

    :param settings: the mode and the place of the cache.
    """

    def __init__(self, settings: CacheSettings) -> None:
        self.settings = settings
        self._root = (settings.path or under_airflow_home("o3_cache")).rstrip("/")
        if local_folder(self._root) is None:
            object_path(self._root)  # a URL no filesystem takes fails here, before anything is paid

    def _entry(self, key: str) -> str:
        """The entry's file: a local path, or an object-storage URL."""
        return f"{self._root}/{key[:2]}/{key}.json"

    def get(self, key: str) -> Completion | None:
        """The stored completion for a request, or ``None``.

        An entry that cannot be read, is not JSON, or is not a stored reply counts as missing, with a
        warning naming the entry; this never raises.
        """
        if self.settings.mode == "off":
            return None
        entry = self._entry(key)
        try:
            return _completion_of(read_text(entry))
        except FileNotFoundError:
            return None
        except Exception as error:
            log.warning(
                "Response cache entry %s could not be read as a stored reply, so it counts as missing: %s",
                entry,
                why(error),
            )
            return None

    def put(self, key: str, completion: Completion) -> None:
        """Store a completion (not in ``read_only`` mode); a crash mid-write leaves no half entry.

        A local entry is written owner-only (files 0600, folders 0700, whatever the umask). A failed
        write is a warning saying the reply was paid and not stored; this never raises.
        """
        if self.settings.mode != "on":
            return
        entry = self._entry(key)
        try:
            write_text(entry, _entry_text(key, completion))
        except Exception as error:
            log.warning(
                "The reply was paid for but NOT stored in the response cache (entry %s): %s. "
                "A retry of this task will pay for it again; check that the cache path is writable",
                entry,
                why(error),
            )


def _entry_text(key: str, completion: Completion) -> str:
    from airflow_o3.response import record_headers

    return json.dumps(
        {
            "version": ENTRY_VERSION,
            "key": key,
            "response": dict(completion.raw),
            "headers": record_headers(completion),
        },
        ensure_ascii=False,
        allow_nan=False,
    )


def _completion_of(text: str) -> Completion:
    """The completion an entry's text holds.

    :raises Exception: any problem with the entry (not JSON, another version, the wrong shape).
    """
    from airflow_o3.response import completion_from_body

    data = json.loads(text, parse_constant=not_json, parse_float=_finite)
    if not isinstance(data, dict):
        raise ValueError(f"the entry is a JSON {type(data).__name__}, not an object")
    if data.get("version") != ENTRY_VERSION:
        raise ValueError(f"the entry is of version {data.get('version')!r}, not {ENTRY_VERSION}")
    headers = data.get("headers")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("the entry's headers are not an object of strings")
    return completion_from_body(data.get("response"), headers, from_cache=True)

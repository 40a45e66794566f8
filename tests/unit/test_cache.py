from __future__ import annotations

import json
import os
import stat

import pytest

from airflow_o3.cache import ENTRY_VERSION, CacheSettings, ResponseCache, cache_key, connection_fingerprint
from airflow_o3.errors import InvalidRequestError
from airflow_o3.response import parse_response

BODY = {"model": "o3-mini", "messages": [{"role": "user", "content": "hi"}]}
REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "o3-mini-2025-01-31",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello"}}],
    "usage": {
        "prompt_tokens": 3,
        "completion_tokens": 70,
        "total_tokens": 73,
        "completion_tokens_details": {"reasoning_tokens": 64},
    },
}


def completion():
    return parse_response(
        200, {"x-aimlapi-usd-spent": "0.0004", "x-request-id": "req-1"}, json.dumps(REPLY).encode()
    )


def test_key_depends_on_the_connection_and_the_body_not_on_key_order():
    fingerprint = connection_fingerprint("https://api.aimlapi.com/v1", "key-a")
    key = cache_key(fingerprint, BODY)
    assert key == cache_key(fingerprint, dict(reversed(list(BODY.items()))))
    assert key != cache_key(connection_fingerprint("http://127.0.0.1:1/v1", "key-a"), BODY)
    assert key != cache_key(connection_fingerprint("https://api.aimlapi.com/v1", "key-b"), BODY)
    assert key != cache_key(fingerprint, {**BODY, "seed": 1})


def test_the_fingerprint_does_not_hold_the_api_key():
    fingerprint = connection_fingerprint("https://api.aimlapi.com/v1", "sk-secret-key-123")
    assert "sk-secret-key-123" not in fingerprint
    assert len(fingerprint) == 64
    assert fingerprint == connection_fingerprint("https://api.aimlapi.com/v1/", "sk-secret-key-123")


def test_stored_reply_keeps_the_original_usage_and_cost(tmp_path):
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path)))
    key = cache_key("b", BODY)
    assert cache.get(key) is None
    cache.put(key, completion())
    stored = cache.get(key)
    assert stored is not None
    assert stored.from_cache
    assert stored.text == "Hello"
    assert stored.usage_record() == {**REPLY["usage"], "usd_spent": 0.0004}
    assert stored.request_id == "req-1"


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path)))
    key = cache_key("b", BODY)
    cache.put(key, completion())
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{key}.json"]


def test_a_half_written_entry_counts_as_missing(tmp_path):
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path)))
    key = cache_key("b", BODY)
    cache.put(key, completion())
    (entry,) = [p for p in tmp_path.rglob("*.json")]
    entry.write_text(entry.read_text()[:40])
    assert cache.get(key) is None


def test_read_only_reuses_but_never_stores(tmp_path):
    key = cache_key("b", BODY)
    ResponseCache(CacheSettings(mode="on", path=str(tmp_path))).put(key, completion())
    read_only = ResponseCache(CacheSettings(mode="read_only", path=str(tmp_path)))
    assert read_only.get(key).text == "Hello"
    other = cache_key("b", {**BODY, "seed": 2})
    read_only.put(other, completion())
    assert read_only.get(other) is None


def test_fsspec_urls_work(tmp_path):
    cache = ResponseCache(CacheSettings(mode="on", path=f"file://{tmp_path}/shared"))
    key = cache_key("b", BODY)
    cache.put(key, completion())
    assert cache.get(key).text == "Hello"
    assert (tmp_path / "shared" / key[:2] / f"{key}.json").exists()


def test_default_place_is_under_airflow_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    cache = ResponseCache(CacheSettings(mode="on"))
    cache.put(cache_key("b", BODY), completion())
    assert os.listdir(tmp_path / "o3_cache")


@pytest.mark.parametrize(
    ("value", "mode"),
    [(None, "off"), (False, "off"), (True, "on"), ("read_only", "read_only"), ({"mode": "on"}, "on")],
)
def test_settings_from_what_a_dag_author_writes(value, mode):
    assert CacheSettings.coerce(value).mode == mode


def test_unknown_mode_names_the_choices():
    with pytest.raises(InvalidRequestError, match="off, on, read_only"):
        CacheSettings.coerce("sometimes")


def test_unknown_setting_names_the_known_keys():
    with pytest.raises(
        InvalidRequestError,
        match="cache has unknown key\\(s\\) folder \\(fix: use the keys mode, path, grace_period\\)",
    ):
        CacheSettings.coerce({"mode": "on", "folder": "/tmp/x"})


def cache_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "airflow_o3.cache" and r.levelname == "WARNING"
    ]


def stored_entry(tmp_path, text: str) -> tuple[ResponseCache, str]:
    """A cache under ``tmp_path`` whose entry for ``BODY`` holds ``text``."""
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path)))
    key = cache_key("b", BODY)
    cache.put(key, completion())
    (entry,) = tmp_path.rglob("*.json")
    entry.write_text(text)
    return cache, key


def test_a_corrupt_entry_is_a_miss_with_one_warning_naming_the_entry(tmp_path, caplog):
    cache, key = stored_entry(tmp_path, '{"version": 2, "response": {"choi')
    assert cache.get(key) is None
    (warning,) = cache_warnings(caplog)
    assert f"{key}.json" in warning
    assert "counts as missing" in warning


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param([], id="a-list"),
        pytest.param({"version": ENTRY_VERSION, "response": [], "headers": {}}, id="response-a-list"),
        pytest.param(
            {"version": ENTRY_VERSION, "response": {"choices": "x"}, "headers": {}}, id="bad-choices"
        ),
        pytest.param({"version": ENTRY_VERSION, "response": REPLY, "headers": []}, id="headers-a-list"),
        pytest.param(
            {"version": ENTRY_VERSION, "response": {**REPLY, "created": "1e400"}, "headers": {}}, id="huge"
        ),
        pytest.param(
            {"version": ENTRY_VERSION, "response": {**REPLY, "usage": "NaN"}, "headers": {}}, id="nan"
        ),
    ],
)
def test_an_entry_of_the_wrong_shape_is_a_miss_with_a_warning(tmp_path, caplog, entry):
    # numbers are spliced in as JSON text: Python's json would write 1e400 as Infinity
    text = json.dumps(entry).replace('"1e400"', "1e400").replace('"NaN"', '{"total_tokens": NaN}')
    cache, key = stored_entry(tmp_path, text)
    assert cache.get(key) is None
    (warning,) = cache_warnings(caplog)
    assert f"{key}.json" in warning


def test_an_entry_that_cannot_be_read_is_a_miss_with_a_warning(tmp_path, caplog):
    cache, key = stored_entry(tmp_path, "{}")
    (entry,) = tmp_path.rglob("*.json")
    entry.unlink()
    entry.mkdir()  # a folder where the entry's file should be: reading it fails even as root
    assert cache.get(key) is None
    (warning,) = cache_warnings(caplog)
    assert "could not be read" in warning


def test_a_cache_root_under_a_regular_file_reads_as_missing_and_writes_with_a_warning(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path / "file" / "cache")))
    key = cache_key("b", BODY)
    cache.put(key, completion())
    assert cache.get(key) is None
    write_warning, read_warning = cache_warnings(caplog)
    assert "paid for but NOT stored" in write_warning
    assert f"{key}.json" in write_warning
    assert "could not be read" in read_warning


def test_entries_are_owner_only_whatever_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path / "o3" / "cache")))
        key = cache_key("b", BODY)
        cache.put(key, completion())
    finally:
        os.umask(previous)
    entry = tmp_path / "o3" / "cache" / key[:2] / f"{key}.json"
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    for folder in (entry.parent, tmp_path / "o3" / "cache", tmp_path / "o3"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert cache.get(key).text == "Hello"


def test_an_entry_of_another_version_is_never_read(tmp_path, caplog):
    cache, key = stored_entry(tmp_path, json.dumps({"version": 1, "response": REPLY, "headers": {}}))
    assert cache.get(key) is None


@pytest.mark.parametrize("grace_period", [-1, 601, "15", True])
def test_a_grace_period_that_is_not_seconds_is_refused_naming_the_field(grace_period):
    with pytest.raises(InvalidRequestError, match=r"cache grace_period .* \(fix: use"):
        CacheSettings.coerce({"mode": "on", "grace_period": grace_period})

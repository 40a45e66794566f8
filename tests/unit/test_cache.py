from __future__ import annotations

import json
import os

import pytest

from airflow_o3.cache import CacheSettings, ResponseCache, cache_key
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


def test_key_depends_on_base_url_and_body_not_on_key_order():
    key = cache_key("https://api.aimlapi.com/v1", BODY)
    assert key == cache_key("https://api.aimlapi.com/v1", dict(reversed(list(BODY.items()))))
    assert key != cache_key("http://127.0.0.1:1/v1", BODY)
    assert key != cache_key("https://api.aimlapi.com/v1", {**BODY, "seed": 1})


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
        InvalidRequestError, match="cache has unknown key\\(s\\) folder \\(fix: use the keys mode, path\\)"
    ):
        CacheSettings.coerce({"mode": "on", "folder": "/tmp/x"})

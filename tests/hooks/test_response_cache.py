"""The hook reads and writes the response cache: one entry per connection and request, failing safe."""

from __future__ import annotations

import json

import pytest

from airflow_o3.cache import CacheSettings, ResponseCache
from airflow_o3.hooks import O3MiniHook
from tests.helpers import USER as MESSAGES


@pytest.fixture
def two_accounts(o3_standin, monkeypatch):
    """Connections ``account_a`` and ``account_b``: the same base URL, different API keys."""
    for conn_id, key in (("ACCOUNT_A", "key-of-account-a"), ("ACCOUNT_B", "key-of-account-b")):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", o3_standin.connection_json(key))
    return o3_standin


def test_two_connections_with_different_keys_never_share_an_entry(two_accounts, tmp_path):
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path)))
    first = O3MiniHook("account_a").chat(MESSAGES, cache=cache)
    other = O3MiniHook("account_b").chat(MESSAGES, cache=cache)
    again = O3MiniHook("account_a").chat(MESSAGES, cache=cache)

    assert [r.header("Authorization") for r in two_accounts.chat_requests] == [
        "Bearer key-of-account-a",
        "Bearer key-of-account-b",
    ]
    assert not first.from_cache
    assert not other.from_cache
    assert again.from_cache
    entries = list(tmp_path.rglob("*.json"))
    assert len(entries) == 2
    for entry in entries:
        assert "key-of-account" not in entry.read_text()


def test_a_cache_that_cannot_store_never_fails_a_paid_call(o3_standin_connection, tmp_path, caplog):
    (tmp_path / "file").write_text("a regular file where the cache folder should be")
    cache = ResponseCache(CacheSettings(mode="on", path=str(tmp_path / "file" / "cache")))
    completion = O3MiniHook().chat(MESSAGES, cache=cache)
    assert completion.text
    assert len(o3_standin_connection.chat_requests) == 1
    assert any("paid for but NOT stored" in record.getMessage() for record in caplog.records)
    assert "standin-test-key" not in json.dumps([record.getMessage() for record in caplog.records])

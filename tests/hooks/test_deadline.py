"""The one watchdog thread that bounds every sync request's wait for its reply headers."""

from __future__ import annotations

import threading

from airflow_o3.hooks import O3MiniHook
from airflow_o3.hooks._deadline import _WATCHDOG


def test_many_calls_share_one_watchdog_thread_and_leave_no_pending_entries(o3_standin_connection):
    hook = O3MiniHook()
    for _ in range(300):
        hook.chat([{"role": "user", "content": "hi"}])
    watchdogs = [thread for thread in threading.enumerate() if thread.name == "o3-deadline-watchdog"]
    assert len(watchdogs) == 1, "one thread for the process, not one per request"
    assert not _WATCHDOG._due, "every finished request released its deadline: none pile up"
    assert len(o3_standin_connection.chat_requests) == 300

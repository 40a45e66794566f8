"""The daily spend ledger: many writers, no lost update; the cap; the UTC day; storage that fails."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
from datetime import UTC, datetime

import pytest

from airflow_o3.errors import DailyBudgetExceededError, InvalidRequestError, LedgerUnavailableError
from airflow_o3.ledger import CapSettings, DailyLedger, cap_settings_from_extras
from airflow_o3.response import Choice, Completion

FINGERPRINT = "f" * 64
NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


def paid(usd: float, credits: float | None = None, *, from_cache: bool = False) -> Completion:
    return Completion(
        id="c",
        model="o3-mini",
        created=None,
        choices=(Choice(index=0, text="ok", finish_reason="stop"),),
        usage={"total_tokens": 10},
        cost_usd=usd,
        credits_used=credits,
        from_cache=from_cache,
    )


def ledger(root: str, cap: float | None = None, *, refresh: float = 0.0, at: float = NOON) -> DailyLedger:
    settings = CapSettings(daily_budget_usd=cap, ledger_path=root, ledger_refresh_seconds=refresh)
    return DailyLedger("aimlapi_default", FINGERPRINT, settings, clock=lambda: at)


def spend_in_a_process(root: str, times: int) -> int:
    """Run in a separate process: record ``times`` replies of $0.01 each (with a cap, so each is written)."""
    own = ledger(root, cap=1000.0)
    for _ in range(times):
        own.record(paid(0.01, 20_000))
    return os.getpid()


def day_files(root: str, day: str = "2026-11-30") -> list[str]:
    folder = os.path.join(root, FINGERPRINT[:32], day)
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def test_the_cap_refuses_once_reached_naming_the_connection_the_cap_and_the_day_spend(tmp_path):
    cap = ledger(str(tmp_path), cap=0.03)
    for _ in range(2):
        cap.record(paid(0.01))
        cap.check()  # below the cap: nothing raised
    cap.record(paid(0.01))
    with pytest.raises(DailyBudgetExceededError) as raised:
        cap.check()
    message = str(raised.value)
    assert "'aimlapi_default'" in message
    assert "daily_budget_usd $0.030000" in message
    assert "$0.030000 spent on 2026-11-30 (UTC)" in message
    assert "raise the connection extra daily_budget_usd" in message
    assert not raised.value.retryable


def test_a_reply_read_from_the_response_cache_costs_nothing_and_is_not_recorded(tmp_path):
    cap = ledger(str(tmp_path), cap=0.01)
    cap.record(paid(0.5, from_cache=True))
    cap.check()
    assert cap.spent("2026-11-30") == 0


def test_threads_of_one_process_lose_no_update(tmp_path):
    shared = ledger(str(tmp_path), cap=1000.0)
    threads = [
        threading.Thread(target=lambda: [shared.record(paid(0.001)) for _ in range(50)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (only,) = day_files(str(tmp_path))
    data = json.loads((tmp_path / FINGERPRINT[:32] / "2026-11-30" / only).read_text())
    assert data["requests"] == 400
    assert data["usd"] == pytest.approx(0.4)


def test_without_a_cap_the_total_is_written_at_the_first_reply_then_at_most_every_few_seconds(tmp_path):
    from airflow_o3 import ledger as module

    now = [NOON]
    settings = CapSettings(daily_budget_usd=None, ledger_path=str(tmp_path), ledger_refresh_seconds=0)
    uncapped = DailyLedger("aimlapi_default", FINGERPRINT, settings, clock=lambda: now[0])

    def on_file() -> int:
        (only,) = day_files(str(tmp_path))
        return json.loads((tmp_path / FINGERPRINT[:32] / "2026-11-30" / only).read_text())["requests"]

    uncapped.record(paid(0.01, 20_000))
    assert on_file() == 1, "the first paid reply is written at once (it shows the credits rate)"
    for _ in range(5):
        uncapped.record(paid(0.01, 20_000))
    assert on_file() == 1, "no write per reply without a cap"
    now[0] += module.UNCAPPED_WRITE_INTERVAL
    uncapped.record(paid(0.01, 20_000))
    assert on_file() == 7
    uncapped.record(paid(0.01, 20_000))
    module._write_the_rest()
    assert on_file() == 8, "what waited is written at exit"


@pytest.mark.slow  # starts processes
def test_processes_writing_at_once_are_all_counted_by_a_reader_elsewhere(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pids = pool.starmap(spend_in_a_process, [(str(tmp_path), 25)] * 4)
    assert len(day_files(str(tmp_path))) == len(set(pids)), "one file per writing process"
    reader = ledger(str(tmp_path), cap=1.0)
    assert reader.spent("2026-11-30") == pytest.approx(1.0)
    with pytest.raises(DailyBudgetExceededError, match=r"\$1\.000000 spent"):
        reader.check()


@pytest.mark.slow  # starts processes
def test_other_processes_spend_is_seen_within_ledger_refresh_seconds(tmp_path):
    reader = ledger(str(tmp_path), cap=0.02, refresh=3600)
    reader.check()  # reads the (empty) day and keeps it for an hour
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.starmap(spend_in_a_process, [(str(tmp_path), 3)])
    reader.check()  # still the hour-old figure: the staleness the docs state
    with pytest.raises(DailyBudgetExceededError):
        ledger(str(tmp_path), cap=0.02, refresh=0).check()


def test_the_day_is_the_utc_day_and_a_new_day_starts_from_zero(tmp_path):
    evening = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC).timestamp()
    ledger(str(tmp_path), at=evening).record(paid(0.05))
    assert day_files(str(tmp_path), "2026-11-30")
    with pytest.raises(DailyBudgetExceededError):
        ledger(str(tmp_path), cap=0.05, at=evening).check()
    ledger(str(tmp_path), cap=0.05, at=evening + 2).check()  # 00:00:01 UTC: a new day


def test_a_corrupt_file_refuses_to_spend_naming_the_file_and_the_fix(tmp_path):
    ledger(str(tmp_path)).record(paid(0.01))
    folder = tmp_path / FINGERPRINT[:32] / "2026-11-30"
    (folder / "other-host-1-abc.json").write_text("{not json")
    with pytest.raises(LedgerUnavailableError) as raised:
        ledger(str(tmp_path), cap=10.0).check()
    assert str(folder / "other-host-1-abc.json") in str(raised.value)
    assert "repair or delete it" in str(raised.value)
    assert "Nothing was sent" in str(raised.value)
    (folder / "other-host-1-abc.json").write_text(json.dumps({"version": 1, "usd": "lots"}))
    with pytest.raises(LedgerUnavailableError, match="holds no usable dollar figures"):
        ledger(str(tmp_path), cap=10.0).check()


def test_without_a_cap_a_corrupt_ledger_stops_nothing(tmp_path):
    folder = tmp_path / FINGERPRINT[:32] / "2026-11-30"
    folder.mkdir(parents=True)
    (folder / "other-host-1-abc.json").write_text("{not json")
    ledger(str(tmp_path)).check()


def test_an_unwritable_ledger_warns_after_a_paid_reply_then_refuses_the_next_request(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cap = ledger(str(blocker / "ledger"), cap=10.0)
    with caplog.at_level(logging.WARNING, logger="airflow_o3.ledger"):
        cap.record(paid(0.01))  # the reply was paid: never an error
    assert "paid for but the daily spend ledger of connection 'aimlapi_default' could not be written" in (
        caplog.text
    )
    with pytest.raises(LedgerUnavailableError, match="this process's spend could not be written"):
        cap.check()
    blocker.unlink()  # the storage is back: the whole total is written at the next check
    cap.check()
    assert ledger(str(blocker / "ledger")).spent("2026-11-30") == pytest.approx(0.01)


def test_the_key_is_in_no_path_and_no_file_of_the_ledger(tmp_path):
    from airflow_o3.cache import connection_fingerprint

    key = "sk-ledger-secret-0123456789"
    fingerprint = connection_fingerprint("http://127.0.0.1:1/v1", key)
    DailyLedger("aimlapi_default", fingerprint, CapSettings(ledger_path=str(tmp_path))).record(paid(0.01))
    for folder, _, files in os.walk(tmp_path):
        assert key not in folder
        for name in files:
            assert key not in name
            assert key not in (tmp_path / folder / name).read_text()


def test_the_credits_per_dollar_rate_comes_from_paid_replies(tmp_path):
    assert ledger(str(tmp_path)).credits_per_usd() is None
    ledger(str(tmp_path)).record(paid(0.01, 20_000))
    assert ledger(str(tmp_path)).credits_per_usd() == pytest.approx(2_000_000)
    next_day = ledger(str(tmp_path), at=NOON + 86400)
    assert next_day.credits_per_usd() == pytest.approx(2_000_000), "yesterday's rate until today shows one"


@pytest.mark.parametrize(
    ("extras", "fragment"),
    [
        (
            {"daily_budget_usd": "lots"},
            "daily_budget_usd='lots' is not usable (fix: set it to a number of dollars",
        ),
        ({"daily_budget_usd": 0}, "daily_budget_usd=0 is not usable"),
        ({"daily_budget_usd": True}, "daily_budget_usd=True is not usable"),
        ({"ledger_refresh_seconds": -1}, "ledger_refresh_seconds=-1 is not usable (fix: set it to seconds"),
        ({"ledger_path": "s3://user:pw@bucket/x"}, "ledger_path has credentials before an '@'"),
    ],
)
def test_bad_cap_extras_are_refused_naming_the_extra_and_the_fix(extras, fragment):
    with pytest.raises(InvalidRequestError, match="connection 'c'") as raised:
        cap_settings_from_extras("c", extras)
    assert fragment in str(raised.value)
    assert "pw" not in str(raised.value)


def test_cap_extras_are_read_from_strings_as_the_connection_form_stores_them():
    settings = cap_settings_from_extras(
        "c", {"daily_budget_usd": "25", "ledger_path": "s3://bucket/o3", "ledger_refresh_seconds": "0"}
    )
    assert settings == CapSettings(
        daily_budget_usd=25.0, ledger_path="s3://bucket/o3", ledger_refresh_seconds=0.0
    )


def record_in_a_forked_child(root: str) -> None:
    ledger(root).record(paid(0.01))


@pytest.mark.slow  # starts processes
def test_a_process_forked_while_another_thread_records_can_record_too(tmp_path):
    from airflow_o3 import ledger as module

    with module._lock:  # as if a batch thread were recording at the moment of the fork
        child = multiprocessing.get_context("fork").Process(
            target=record_in_a_forked_child, args=(str(tmp_path),)
        )
        child.start()
    child.join(timeout=30)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0, "the child hung on the lock it inherited"
    assert ledger(str(tmp_path)).spent("2026-11-30") == pytest.approx(0.01)


def test_on_object_storage_the_cap_counts_the_files_of_every_worker():
    from tests.dagrun import AIRFLOW_3

    if not AIRFLOW_3:
        pytest.skip("Airflow 2's ObjectStoragePath has no memory:// filesystem to stand in for s3://")
    import uuid

    import fsspec

    root = f"memory://o3-ledger-{uuid.uuid4().hex}"
    other = json.dumps({"version": 1, "usd": 0.02, "credits": 40_000, "priced_usd": 0.02, "requests": 2})
    folder = f"{root[len('memory://') :]}/{FINGERPRINT[:32]}/2026-11-30"
    fsspec.filesystem("memory").pipe(f"/{folder}/worker-b-1-abc.json", other.encode())
    own = ledger(root, cap=0.03)
    own.check()
    own.record(paid(0.01, 20_000))
    with pytest.raises(DailyBudgetExceededError, match=r"\$0\.030000 spent"):
        own.check()
    assert len(fsspec.filesystem("memory").ls(f"/{folder}")) == 2, "this process wrote a file of its own"
    fsspec.filesystem("memory").pipe(f"/{folder}/worker-c-1-abc.json", b"{broken")
    with pytest.raises(LedgerUnavailableError, match=r"worker-c-1-abc\.json could not be read"):
        own.check()

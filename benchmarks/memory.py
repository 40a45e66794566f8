"""Memory: the peak of a 10,000-item batch, and what one in-flight deferred call costs the triggerer.

1. ``O3MiniBatchOperator.execute`` over 10,000 items (max_concurrency 64, the stand-in in its own
   process): resident memory sampled every 10 ms; the peak above the level before the batch, per item,
   and the size of the XComs the batch pushes.
2. ``--triggers`` ``O3MiniTrigger`` runs in flight at once in one event loop, as in a triggerer, against
   a server that takes ``--trigger-latency`` seconds to answer: resident memory and Python heap
   (tracemalloc) while they all wait, per call. For scale, the resident memory of this process (Airflow
   and the provider imported), the order of what a task holding a worker slot keeps alive.

No target: these are the figures to plan worker and triggerer sizes with.
Run: ``.venv/bin/python benchmarks/memory.py`` (options: ``--items``, ``--triggers``, ``--trigger-latency``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from _common import quiet, standin_process, use_connection

from airflow_o3.testing.context import stub_context

MB = 1024 * 1024


class PeakRss:
    """Samples this process's resident memory on a thread; ``peak`` is the highest seen."""

    def __init__(self, interval: float = 0.01) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def run_batch(items: int, concurrency: int) -> dict:
    from airflow_o3.operators import O3MiniBatchOperator

    operator = O3MiniBatchOperator(
        task_id="enrich",
        items=[{"id": n, "company": f"Company {n}", "city": "Lyon"} for n in range(items)],
        prompt="Row {{ index }}: give the industry of {{ item.company }} ({{ item.city }}) in three words.",
        limits={"max_concurrency": concurrency},
    )
    context = stub_context()
    values = operator.execute(context)
    assert len(values) == items and all(values)
    xcoms = {"return_value": values, **context["ti"].xcoms}
    return {key: len(json.dumps(value)) for key, value in xcoms.items()}


async def deferred_calls(count: int, wait: float) -> tuple[int, int]:
    """Resident memory and traced heap added while ``count`` triggers wait for their reply."""
    from airflow_o3.triggers import O3MiniTrigger

    body = {"model": "o3-mini", "messages": [{"role": "user", "content": "Think about tides."}]}

    async def one(index: int) -> object:
        trigger = O3MiniTrigger(conn_id="aimlapi_default", body=body, client_request_id=f"bench-{index}")
        return await anext(trigger.run())

    await one(-1)  # warm-up: modules, the shared TLS context
    gc.collect()
    before_rss = rss()
    tracemalloc.start()
    before_heap = tracemalloc.get_traced_memory()[0]
    tasks = [asyncio.create_task(one(index)) for index in range(count)]
    await asyncio.sleep(wait)  # every request sent, every reply still pending
    in_flight_heap = tracemalloc.get_traced_memory()[0]
    in_flight_rss = psutil.Process().memory_info().rss
    events = await asyncio.gather(*tasks)
    tracemalloc.stop()
    assert all(event.payload["status"] == "success" for event in events)  # type: ignore[attr-defined]
    return in_flight_rss - before_rss, in_flight_heap - before_heap


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--triggers", type=int, default=200)
    parser.add_argument("--trigger-latency", type=float, default=4.0)
    args = parser.parse_args()

    with standin_process(latency=0.01) as base_url:
        use_connection(base_url)
        with quiet():
            run_batch(args.concurrency, args.concurrency)  # warm-up: imports, pools, templates
            before = rss()
            started = time.perf_counter()
            with PeakRss() as peak:
                sizes = run_batch(args.items, args.concurrency)
            elapsed = time.perf_counter() - started
    with standin_process(latency=args.trigger_latency) as base_url:
        use_connection(base_url)
        with quiet():
            added_rss, added_heap = asyncio.run(deferred_calls(args.triggers, args.trigger_latency / 2))
            process_rss = rss()

    extra = peak.peak - before
    print(f"memory: {args.items:,}-item batch (max_concurrency {args.concurrency}), {elapsed:.1f} s")
    print(f"  resident before the batch     {before / MB:7.1f} MB (Airflow and the provider imported)")
    print(
        f"  peak during the batch         {peak.peak / MB:7.1f} MB  = +{extra / MB:.1f} MB, "
        f"{extra / args.items / 1024:.2f} KB per item"
    )
    print(
        "  XCom pushed (JSON)            "
        + ", ".join(f"{key} {size / 1024:.0f} KB" for key, size in sorted(sizes.items()))
    )
    calls, latency = args.triggers, args.trigger_latency
    rss_each, heap_each = added_rss / calls / 1024, added_heap / calls / 1024
    print(f"{calls} deferred calls in flight at once in one event loop (replies after {latency:.0f} s):")
    print(f"  resident memory added         {added_rss / MB:7.1f} MB  = {rss_each:.0f} KB per call")
    print(
        f"  Python heap added             {added_heap / MB:7.1f} MB  = {heap_each:.0f} KB per call (traced)"
    )
    print(f"  for scale: this process (Airflow + provider imported) {process_rss / MB:.0f} MB resident")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
